"""The photometry stage: one frame in, one result object out.

solve (or the header's WCS) -> the target and the comparison stars on the frame -> the
field's FWHM and the aperture -> every star measured on the green plane -> the ensemble's
zero point (the check star kept out of it) -> the target's magnitude and error -> the
mid-exposure times and the airmass. Whatever stops a step (no solution, the target off the
field, too few comparison stars, a saturated target) is the result's `reason`, with the
magnitude null: never a traceback. Non-finite numbers are never in the result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from seestar_watch.config import PhotometryConfig, Target, parse_position
from seestar_watch.fitsheader import read_frame
from seestar_watch.photometry import catalogue, ensemble, measure, sky, solve
from seestar_watch.photometry.catalogue import Comparisons, Star, separation

TYCHO = catalogue.TYCHO
FILTER = "TG"  # the AAVSO's band for a colour sensor's green channel
EDGE = 2.0  # the aperture's outer annulus must fit this many pixels inside the frame
CHECK_MIN = 4  # comparison stars needed before one is kept out as the check star
SAME_AS_TARGET = 10.0 / 3600  # degrees: a catalogue star this close to the target is it
RESULT_FIELDS = (
    "target", "mag", "mag_err", "filter", "comps", "zp", "zp_scatter", "check_name",
    "check_mag", "check_err", "check_inst_mag", "check_ref_mag", "airmass", "altitude", "jd",
    "hjd", "bjd_tdb", "fwhm_arcsec", "aperture_arcsec", "x", "y", "snr", "inst_mag",
    "saturated", "solved", "solver", "solve_s", "comp_source", "chart", "reason",
)  # fmt: skip

Result = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """What to measure: the target (None: not given), comparison stars, an aperture."""

    target: Target | None
    comps: Comparisons | None  # None: Tycho-2 from the index
    aperture_arcsec: float | None
    options: PhotometryConfig


def resolve_target(
    text: str | None, options: PhotometryConfig, comps: Comparisons | None
) -> Target | None:
    """--target "RA DEC" or a name (the config's targets, then the comparison file's)."""
    text = text or options.target
    if text is None:
        return comps.target if comps is not None else None
    try:
        ra, dec = parse_position(text)
        return Target(catalogue.position_name(ra, dec), ra, dec)
    except ValueError:
        pass
    wanted = _folded(text)
    for target in options.targets:
        if _folded(target.name) == wanted:
            return target
    if comps is not None and comps.target is not None and _folded(comps.target.name) == wanted:
        return comps.target
    known = [t.name for t in options.targets] + (
        [comps.target.name] if comps and comps.target else []
    )
    raise ValueError(
        f'no target named {text!r} (give "RA DEC", or a name from photometry.targets'
        f"{' or the comparison file' if comps else ''}: {', '.join(known) or 'none there'})"
    )


def _folded(name: str) -> str:
    return "".join(name.lower().split())


def run(path: Path, request: Request) -> Result:
    """The result object for one frame (see RESULT_FIELDS)."""
    result: Result = dict.fromkeys(RESULT_FIELDS)
    result.update(filter=FILTER, saturated=False, solved=False)
    target = request.target
    if target is None:
        return {**result, "reason": "no target: give --target, or photometry.target"}
    result["target"] = target.name
    header, raw = _read(path)
    started = time.monotonic()
    try:
        found = solve.solve(
            path, header, raw.shape, solver=request.options.solver,
            timeout=request.options.solve_timeout, index_folder=request.options.index_folder,
            astap_database=request.options.astap_database,
        )  # fmt: skip
    except solve.NotSolved as exc:
        return {**result, "solve_s": _round(time.monotonic() - started, 2), "reason": str(exc)}
    result.update(solved=True, solver=found.solver, solve_s=_round(found.seconds, 2))
    frame = _Frame(found.wcs, header, raw, request.options)
    _times(result, header, target, request.options)
    return _photometry(result, frame, target, request)


def _read(path: Path) -> tuple[fits.Header, np.ndarray]:
    data, header = read_frame(path)  # one read of the file, checked by our own reader
    return header, data


@dataclass
class _Frame:
    wcs: Any
    header: fits.Header
    raw: np.ndarray
    options: PhotometryConfig

    def __post_init__(self) -> None:
        self.scale = solve.pixel_scale(dict(self.header)) * 2  # arcsec per green pixel
        self.plane = measure.green_plane(
            self.raw, str(self.header.get("BAYERPAT", "GRBG")), self.options.adc_max,
            self.options.saturation,
        )  # fmt: skip

    def green_of(self, ra: float, dec: float) -> tuple[float, float]:
        x, y = self.wcs.world_to_pixel_values(ra, dec)
        return measure.to_green(float(x), float(y))

    def centre(self) -> tuple[float, float, float]:
        """(ra, dec, radius) of the field, degrees."""
        height, width = self.raw.shape
        ra, dec = self.wcs.pixel_to_world_values(width / 2, height / 2)
        corner_ra, corner_dec = self.wcs.pixel_to_world_values(0, 0)
        return (
            float(ra),
            float(dec),
            separation(float(ra), float(dec), float(corner_ra), float(corner_dec)),
        )


def _times(result: Result, header: fits.Header, target: Target, options: PhotometryConfig) -> None:
    date, exposure = header.get("DATE-OBS"), header.get("EXPTIME")
    if not isinstance(date, str) or not isinstance(exposure, int | float):
        return
    try:
        when = sky.moment(date, float(exposure), target.ra, target.dec,
                          options.site or sky.site_of(dict(header)))  # fmt: skip
    except ValueError:
        return  # a DATE-OBS that is no date: the times stay null
    result.update(
        jd=_round(when.jd, 6), hjd=_round(when.hjd, 6), bjd_tdb=_round(when.bjd_tdb, 6),
        altitude=_round(when.altitude, 2), airmass=_round(when.airmass, 4),
    )  # fmt: skip


def _photometry(result: Result, frame: _Frame, target: Target, request: Request) -> Result:
    tx, ty = frame.green_of(target.ra, target.dec)
    raw_x, raw_y = measure.to_raw(tx, ty)
    result.update(x=_round(raw_x + 1, 1), y=_round(raw_y + 1, 1))  # FITS pixels, from 1
    try:
        comps = request.comps or catalogue.index_stars(
            *frame.centre(), request.options.index_folder
        )
    except catalogue.CatalogueError as exc:
        return {**result, "reason": str(exc)}
    result.update(comp_source=comps.source, chart=comps.chart)
    on_frame = _positions(frame, comps.stars, 12)
    if not on_frame and comps.source != TYCHO:
        return {
            **result,
            "reason": f"no star of {comps.source} in this frame: is it for another field?",
        }
    fwhm = measure.field_fwhm(frame.plane, on_frame, request.options.gain)
    if fwhm is None:
        return {**result, "reason": "no star of the catalogue stands out in the frame (clouds?)"}
    result["fwhm_arcsec"] = _round(fwhm * frame.scale, 2)
    radius = (
        request.aperture_arcsec / frame.scale
        if request.aperture_arcsec
        else max(2.0, measure.APERTURE_PER_FWHM * fwhm)
    )
    result["aperture_arcsec"] = _round(radius * frame.scale, 1)
    apertures = _Apertures(frame, radius, fwhm, request.options.gain)
    if not measure.inside(frame.plane, tx, ty, apertures.margin):
        return {**result, "reason": "target not in field"}
    return _magnitudes(result, apertures, target, comps)


def _positions(frame: _Frame, stars: tuple[Star, ...], margin: float) -> list[tuple[float, float]]:
    found = [frame.green_of(s.ra, s.dec) for s in stars]
    return [p for p in found if measure.inside(frame.plane, p[0], p[1], margin)]


@dataclass(frozen=True)
class _Apertures:
    """One frame's aperture: its radius (green pixels), the field's FWHM, and the room the
    sky annulus needs from the edge."""

    frame: _Frame
    radius: float
    fwhm: float
    gain: float

    @property
    def margin(self) -> float:
        return max(3 * self.radius, 2 * self.radius + 4) + EDGE

    def on_frame(self, star: Star | Target) -> bool:
        return measure.inside(
            self.frame.plane, *self.frame.green_of(star.ra, star.dec), self.margin
        )

    def photometry_of(self, stars: list[Star | Target]) -> list[measure.Measured]:
        positions = [self.frame.green_of(s.ra, s.dec) for s in stars]
        return measure.measure(self.frame.plane, positions, self.radius, self.gain)

    def good(self, star: measure.Measured) -> bool:
        return star.usable and star.snr >= 10 and not measure.is_spike(star, self.fwhm)


def _magnitudes(
    result: Result, apertures: _Apertures, target: Target, comps: Comparisons
) -> Result:
    exposure = float(apertures.frame.header.get("EXPTIME") or 1.0)
    stars = [
        s
        for s in comps.stars
        if separation(s.ra, s.dec, target.ra, target.dec) > SAME_AS_TARGET and apertures.on_frame(s)
    ]
    aimed, *others = apertures.photometry_of([target, *stars])
    good = [(s, m) for s, m in zip(stars, others, strict=True) if apertures.good(m)]
    check = _check(good, comps)
    zp = ensemble.zero_point(
        [
            ensemble.Comparison(s.name, s.mag, s.mag_err, *_instrumental(m, exposure))
            for s, m in good
            if check is None or s.name != check[0].name
        ]
    )
    if isinstance(zp, str):
        return {**result, "reason": zp}
    result.update(comps=len(zp.used), zp=_round(zp.value, 4), zp_scatter=_round(zp.scatter, 4))
    if check is not None:
        inst = _instrumental(check[1], exposure)
        mag, err = ensemble.calibrated(*inst, zp)
        result.update(
            check_name=check[0].name, check_mag=_round(mag, 4), check_err=_round(err, 4),
            check_inst_mag=_round(inst[0], 4), check_ref_mag=_round(check[0].mag, 4),
        )  # fmt: skip
    return _target(result, aimed, zp, apertures, exposure)


def _instrumental(star: measure.Measured, exposure: float) -> tuple[float, float]:
    return ensemble.instrumental(star.flux, star.flux_err, exposure)


def _check(
    good: list[tuple[Star, measure.Measured]], comps: Comparisons
) -> tuple[Star, measure.Measured] | None:
    """The check star: the file's, or the brightest good comparison star (kept out of the
    ensemble); none when that would leave too few."""
    if comps.check is not None:
        return next(((s, m) for s, m in good if s.name == comps.check), None)
    if len(good) < CHECK_MIN:
        return None
    return min(good, key=lambda pair: pair[0].mag)


def _target(
    result: Result,
    aimed: measure.Measured,
    zp: ensemble.ZeroPoint,
    apertures: _Apertures,
    exposure: float,
) -> Result:
    result["snr"] = _round(aimed.snr, 1)
    if aimed.saturated:
        return {**result, "saturated": True, "reason": "saturated (a pixel at the ADC's limit)"}
    if aimed.flux <= 0 or not math.isfinite(aimed.flux_err):
        return {**result, "reason": "no flux above the sky at the target's place"}
    if measure.is_spike(aimed, apertures.fwhm):
        return {**result, "reason": "a hot pixel or a cosmic ray at the target's place, not a star"}
    inst, inst_err = _instrumental(aimed, exposure)
    mag, err = ensemble.calibrated(inst, inst_err, zp)
    return {**result, "inst_mag": _round(inst, 4), "mag": _round(mag, 4), "mag_err": _round(err, 4)}


def _round(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def summary(name: str, result: Result) -> str:
    """The line a person reads."""
    head = f"{name}: {result.get('target') or '?'}"
    if result.get("mag") is not None:
        check = (
            f", check {result['check_name']} {result['check_mag']:.3f}"
            if result.get("check_mag") is not None
            else ""
        )
        return (
            f"{head} {FILTER} {result['mag']:.3f} +- {result['mag_err']:.3f}"
            f" ({result['comps']} comps, zp scatter {result['zp_scatter']:.3f}{check};"
            f" airmass {result['airmass'] or '-'}; solved by {result['solver']}"
            f" in {result['solve_s']} s)"
        )
    return f"{head}: no magnitude: {result.get('reason')}"


Say = Callable[[str], None]
