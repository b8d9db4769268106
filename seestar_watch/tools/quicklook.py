"""`seestar-watch quicklook`: a first look at one frame, as a pipeline stage.

For one raw Seestar sub: sky background and noise, stars detected, median FWHM
(pixels and arcsec), and aperture photometry of the target as an instrumental
magnitude with its SNR. The Seestar centres its target only roughly (a plate-solved
goto leaves it tens of pixels off; an M 94 core sits ~90 px from the centre), so the
target is the brightest source within TARGET_RADIUS raw pixels of the centre.

Bayer: an S50 sub is a raw GRBG mosaic. Rather than demosaic (which invents
two thirds of the values) each 2x2 G-R-B-G cell is summed into one "superpixel":
a luminance image at half the resolution that keeps every photon, so fluxes are
the raw ADU sums and noise is measured on the same image. Widths measured in
superpixels are converted back to raw pixels (x2) for the report.

numpy and astropy only: detection is a local-maximum search above 5 sigma; a
detection is a star only if the light around its brightest raw pixel holds at least as
much as that pixel (a hot pixel or a cosmic ray hit holds nearly nothing around it). The
width of each star comes from its second moments inside 4 sigma above its own local sky
(a galaxy or a nebula under it would widen it), corrected for pixel size, from the stars
20 sigma above the sky. The photometry is one circular aperture of a fixed radius in
arcsec (not a multiple of the measured FWHM: that would make the magnitude of anything
extended follow the FWHM estimate) with a local sky annulus; a target with a raw pixel
near the ADC's limit is `saturated`, with no magnitude.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.stats import sigma_clipped_stats

from seestar_watch.errors import UserError
from seestar_watch.fitsheader import read_frame

DETECT_SIGMA = 5.0
FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))
ARCSEC_PER_RADIAN = 206_264.8
ARCSEC = '"'
TARGET_RADIUS = 150  # raw pixels from the centre (~6 arcmin on an S50) holding the target
APERTURE_ARCSEC = 15.0  # the aperture's radius: ~95 % of a star's light at a poor 16" FWHM
S50_SCALE = 2.39  # arcsec per raw pixel, when the header cannot say
SATURATED = 0.9 * 65535  # raw ADU: beyond this a pixel is no longer linear
SPREAD = 1.0  # a star's 8 raw neighbours hold at least this share of its brightest pixel
WIDTH_SIGMA = 20.0  # only detections this far above the sky measure the FWHM
CSV_FIELDS = [
    "file",
    "OBJECT",
    "DATE-OBS",
    "EXPTIME",
    "FILTER",
    "background",
    "noise",
    "stars",
    "fwhm_px",
    "fwhm_arcsec",
    "target_x",
    "target_y",
    "target_dx",
    "target_dy",
    "flux",
    "inst_mag",
    "snr",
    "saturated",
    "aperture_arcsec",
]


@dataclass(frozen=True)
class Measurement:
    background: float  # ADU per raw pixel
    noise: float  # ADU per raw pixel
    stars: int
    fwhm_px: float | None  # raw pixels
    fwhm_arcsec: float | None
    target_x: float | None  # raw pixel column of the target's centroid
    target_y: float | None
    target_dx: float | None  # raw pixels from the frame's centre (+: right, +: down)
    target_dy: float | None
    flux: float | None  # ADU in the aperture, sky removed
    inst_mag: float | None  # -2.5 log10(flux / EXPTIME); None for a saturated target
    snr: float | None
    saturated: bool  # a raw pixel of the target's aperture at SATURATED or above
    aperture_arcsec: float  # the aperture's radius


class QuicklookError(UserError):
    """What quicklook cannot do (write its CSV or result file); one line says why."""


def load(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """The image and header of a complete FITS frame; UnusableFrame says, in one line,
    why a file is not one."""
    data, header = read_frame(path)
    return data, dict(header)


def superpixels(raw: np.ndarray) -> np.ndarray:
    """Sum each 2x2 Bayer cell: a half-resolution luminance image that keeps all the flux."""
    height, width = (raw.shape[0] // 2) * 2, (raw.shape[1] // 2) * 2
    cells = raw[:height, :width]
    return cells[0::2, 0::2] + cells[0::2, 1::2] + cells[1::2, 0::2] + cells[1::2, 1::2]


def measure(
    raw: np.ndarray, header: dict[str, Any], aperture_arcsec: float = APERTURE_ARCSEC
) -> Measurement:
    image = superpixels(raw)
    _, sky, noise = sigma_clipped_stats(image, sigma=3.0, maxiters=5)
    sky, noise = float(sky), float(noise)
    detected = find_peaks(image - sky, DETECT_SIGMA * noise)
    peaks = [p for p in detected if spread_like_a_star(raw, *p)]
    bright = [p for p in peaks if image[p] - sky >= WIDTH_SIGMA * noise]
    widths = [w for w in (star_sigma(image, y, x) for y, x in bright[:200]) if w]
    sigma = float(np.median(widths)) if widths else None
    fwhm_px = 2 * sigma * FWHM_PER_SIGMA if sigma else None  # superpixel -> raw pixels
    scale = pixel_scale(header)
    exposure = float(header.get("EXPTIME") or 0)
    radius = aperture_arcsec / (scale or S50_SCALE) / 2  # superpixels
    target = photometry(
        image, sky, noise, radius, exposure=exposure, peaks=peaks, brightest=brightest_pixels(raw)
    )
    return Measurement(
        background=round(sky / 4, 3),
        noise=round(noise / 2, 3),
        stars=len(peaks),
        fwhm_px=_round(fwhm_px),
        fwhm_arcsec=_round(fwhm_px * scale if fwhm_px and scale else None),
        aperture_arcsec=aperture_arcsec,
        **target,
    )


def find_peaks(image: np.ndarray, threshold: float, border: int = 8) -> list[tuple[int, int]]:
    """Local maxima above `threshold` (a 5x5 neighbourhood), brightest first."""
    core = image[border:-border, border:-border]
    is_peak = core > threshold
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            if dy or dx:
                shifted = image[
                    border + dy : image.shape[0] - border + dy,
                    border + dx : image.shape[1] - border + dx,
                ]
                # ties (a flat, saturated top) go to the first pixel in reading order
                is_peak &= (core > shifted) if (dy, dx) < (0, 0) else (core >= shifted)
    ys, xs = np.nonzero(is_peak)
    order = np.argsort(-core[ys, xs])
    return [(int(ys[i]) + border, int(xs[i]) + border) for i in order]


def spread_like_a_star(raw: np.ndarray, y: int, x: int) -> bool:
    """Whether the detection at superpixel (y, x) is spread over raw pixels as a star is:
    the 8 raw neighbours of its brightest raw pixel, above their sky, hold at least SPREAD
    times that pixel's light. A hot pixel or a cosmic ray hit holds nearly nothing around."""
    cell = raw[2 * y : 2 * y + 2, 2 * x : 2 * x + 2]
    dy, dx = np.unravel_index(int(np.argmax(cell)), cell.shape)
    row, column = 2 * y + int(dy), 2 * x + int(dx)
    if not (2 <= row < raw.shape[0] - 2 and 2 <= column < raw.shape[1] - 2):
        return False
    around = raw[row - 2 : row + 3, column - 2 : column + 3]
    ring = np.concatenate([around[0], around[-1], around[1:-1, 0], around[1:-1, -1]])
    local = float(np.median(ring))  # the sky just outside the 3x3
    box = raw[row - 1 : row + 2, column - 1 : column + 2] - local
    peak = float(box[1, 1])
    return peak > 0 and float(box.sum()) - peak >= SPREAD * peak


def brightest_pixels(raw: np.ndarray) -> np.ndarray:
    """The brightest raw pixel of each 2x2 cell (for saturation), cell by cell."""
    height, width = (raw.shape[0] // 2) * 2, (raw.shape[1] // 2) * 2
    cells = raw[:height, :width]
    return np.maximum.reduce(
        [cells[0::2, 0::2], cells[0::2, 1::2], cells[1::2, 0::2], cells[1::2, 1::2]]
    )


def star_sigma(image: np.ndarray, y: int, x: int) -> float | None:
    """Gaussian sigma (superpixels) from second moments inside 4 sigma above the star's
    local sky (the median of a ring 3 superpixels wide around that), iterated."""
    sigma = 1.5
    for _ in range(4):
        radius = max(3, math.ceil(4 * sigma))
        outer = radius + 3
        if not (outer <= y < image.shape[0] - outer and outer <= x < image.shape[1] - outer):
            return None
        box = image[y - outer : y + outer + 1, x - outer : x + outer + 1]
        dy, dx = np.mgrid[-outer : outer + 1, -outer : outer + 1]
        squared = dx * dx + dy * dy
        inside = squared <= radius * radius
        local = float(np.median(box[~inside & (squared <= outer * outer)]))
        weights = np.where(inside, box - local, 0.0)
        total = weights.sum()
        if total <= 0:
            return None
        cy, cx = (weights * dy).sum() / total, (weights * dx).sum() / total
        variance = (weights * ((dy - cy) ** 2 + (dx - cx) ** 2)).sum() / total / 2
        variance -= 1 / 12  # a pixel-integrated Gaussian is wider by one pixel's own variance
        if variance <= 0:
            return None
        sigma = math.sqrt(variance)
    return sigma


def pixel_scale(header: dict[str, Any]) -> float | None:
    """Arcsec per raw pixel from XPIXSZ (microns) and FOCALLEN (mm)."""
    size, focal = header.get("XPIXSZ"), header.get("FOCALLEN")
    if not isinstance(size, int | float) or not isinstance(focal, int | float) or focal <= 0:
        return None
    return ARCSEC_PER_RADIAN * size * 1e-3 / focal


def photometry(
    image: np.ndarray,
    sky: float,
    noise: float,
    radius: float,
    *,
    exposure: float,
    peaks: list[tuple[int, int]],
    brightest: np.ndarray,
) -> dict[str, Any]:
    """Aperture photometry of the brightest star within TARGET_RADIUS of the centre.

    `peaks` are the stars, brightest first; `radius` is the aperture's, in superpixels;
    target_* are in raw pixels. No star there, or no flux above the local sky, gives None
    everywhere: no target found. A saturated target keeps its place and flux, not a
    magnitude.
    """
    cy, cx = image.shape[0] / 2 - 0.5, image.shape[1] / 2 - 0.5
    near = [(y, x) for y, x in peaks if 2 * math.hypot(y - cy, x - cx) <= TARGET_RADIUS]
    if not near:
        return {**dict.fromkeys(NO_TARGET), "saturated": False}
    y, x = _centroid(image - sky, *near[0])
    inner, outer = 2.0 * radius, max(3.0 * radius, 2.0 * radius + 4)
    yy, xx = np.indices(image.shape)
    distance = np.hypot(yy - y, xx - x)
    aperture, annulus = distance <= radius, (distance >= inner) & (distance <= outer)
    local_sky = float(np.median(image[annulus]))
    count = int(aperture.sum())
    flux = float(image[aperture].sum() - count * local_sky)
    if flux <= 0:
        return {**dict.fromkeys(NO_TARGET), "saturated": False}
    saturated = bool(brightest[aperture].max() >= SATURATED)
    # CCD equation with the measured sky noise; the header has no EGAIN, so 1 e-/ADU
    error = math.sqrt(flux + count * noise**2 * (1 + count / max(1, annulus.sum())))
    magnitude = -2.5 * math.log10(flux / exposure) if exposure > 0 and not saturated else None
    return {
        "target_x": _round(2 * x + 0.5),
        "target_y": _round(2 * y + 0.5),
        "target_dx": _round(2 * (x - cx)),
        "target_dy": _round(2 * (y - cy)),
        "flux": _round(flux),
        "inst_mag": _round(magnitude),
        "snr": None if saturated else _round(flux / error),
        "saturated": saturated,
    }


NO_TARGET = ("target_x", "target_y", "target_dx", "target_dy", "flux", "inst_mag", "snr")


def _centroid(image: np.ndarray, y: int, x: int, radius: int = 3) -> tuple[float, float]:
    box = np.clip(image[y - radius : y + radius + 1, x - radius : x + radius + 1], 0, None)
    total = box.sum()
    if total <= 0:
        return float(y), float(x)
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return y + float((box * dy).sum() / total), x + float((box * dx).sum() / total)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def summary(name: str, header: dict[str, Any], result: Measurement) -> str:
    def show(value: float | None, unit: str = "", fmt: str = ".2f") -> str:
        return "-" if value is None else f"{value:{fmt}}{unit}"

    if result.flux is None:
        target = f"no target found within {TARGET_RADIUS} px of the centre"
    elif result.saturated:
        target = (
            f"target saturated at ({round(result.target_dx or 0):+d},"
            f" {round(result.target_dy or 0):+d}) px from the centre (no magnitude)"
        )
    else:
        target = (
            f"mag={show(result.inst_mag, fmt='.3f')} snr={show(result.snr, fmt='.0f')}"
            f" at ({round(result.target_dx or 0):+d}, {round(result.target_dy or 0):+d}) px"
            " from the centre"
        )
    return (
        f"{name}: {header.get('OBJECT', '?')} bkg={result.background:.1f}"
        f" noise={result.noise:.2f} stars={result.stars}"
        f" fwhm={show(result.fwhm_px, 'px')} ({show(result.fwhm_arcsec, ARCSEC)}) {target}"
    )


RESULT_FIELDS = (
    "background", "noise", "stars", "fwhm_px", "fwhm_arcsec", "inst_mag", "snr", "saturated",
    "aperture_arcsec",
)  # fmt: skip


def write_result(path: str, result: Measurement) -> None:
    """The measurements as the daemon's $SEESTAR_WATCH_RESULT wants them: one JSON object
    (null where there is no value: no stars, no target)."""
    measured = asdict(result)
    values = {
        key: measured[key] if key in ("stars", "saturated") else _round(measured[key])
        for key in RESULT_FIELDS
    }
    try:
        with open(path, "w") as out:
            json.dump(values, out, allow_nan=False)
    except OSError as exc:
        raise QuicklookError(
            f"cannot write the result file {path}: {exc.strerror or exc}"
        ) from None


def append_csv(path: Path, name: str, header: dict[str, Any], result: Measurement) -> None:
    """One row per frame; the header line is written once, when the file is new or empty."""
    row = {"file": name, **{key: header.get(key) for key in CSV_FIELDS[1:5]}, **asdict(result)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
            if out.tell() == 0:
                writer.writeheader()
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
    except OSError as exc:
        raise QuicklookError(
            f"cannot write the CSV {path}: {exc.strerror or exc}; give --csv a file in a folder"
            " you can write (under the system service: one listed in ReadWritePaths=, which"
            " `seestar-watch service install` adds for quicklook's --csv)"
        ) from None
