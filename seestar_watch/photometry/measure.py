"""Aperture photometry on the green plane of a raw Seestar mosaic (photutils).

A Seestar sub is a raw Bayer mosaic (BAYERPAT GRBG: green at (0,0) and (1,1) of every 2x2
cell). Its two green pixels per cell, summed, are the green plane: half the resolution,
every green photon kept, the band the AAVSO calls TG. Every star of a frame is measured in
the same circular aperture with its sky from a local annulus (sigma-clipped median); its
error is the photon noise of its flux (the gain, in e-/ADU, only scales this part) and the
measured scatter of its sky (which holds the read noise) over the aperture and over the
sky's own estimate. A star with any raw pixel within `saturation` of the ADC's maximum in
its aperture is saturated: never a comparison star, and a saturated target has no
magnitude. A "star" much narrower than the field's stars is a hot pixel or a cosmic ray.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture
from photutils.centroids import centroid_com, centroid_sources

GREENS = {  # the two green pixels of a 2x2 cell, (row, column), for each BAYERPAT
    "GRBG": ((0, 0), (1, 1)),
    "GBRG": ((0, 0), (1, 1)),
    "RGGB": ((0, 1), (1, 0)),
    "BGGR": ((0, 1), (1, 0)),
}
FIRST_APERTURE = 4.0  # green pixels (~19"): the aperture that measures the field's FWHM
APERTURE_PER_FWHM = 1.5  # the aperture's radius in FWHMs, when none is configured
SPIKE = 0.5  # a source narrower than this fraction of the field's FWHM is no star
RECENTRE = 2.0  # green pixels a star's centroid may move from where the WCS puts it


@dataclass(frozen=True)
class Plane:
    """The green plane, and the brightest raw pixel of each 2x2 cell (for saturation)."""

    green: np.ndarray  # ADU, the sum of the two greens of each cell
    brightest: np.ndarray  # ADU, the largest of the cell's four raw pixels
    limit: float  # raw ADU at or above which a pixel is no longer linear


@dataclass(frozen=True)
class Measured:
    x: float  # green-plane pixel (0-based) of the centre used
    y: float
    flux: float  # ADU in the aperture, sky removed
    flux_err: float
    sky: float  # ADU per green pixel
    fwhm: float  # green pixels, from the source's second moments (nan: none)
    saturated: bool

    @property
    def usable(self) -> bool:
        return self.flux > 0 and math.isfinite(self.flux_err) and not self.saturated

    @property
    def snr(self) -> float:
        return self.flux / self.flux_err if self.flux_err > 0 else 0.0


def green_plane(raw: np.ndarray, bayer: str, adc_max: float, saturation: float) -> Plane:
    """The green plane of a raw mosaic (a mono frame is its own plane, binned 2x2)."""
    raw = np.asarray(raw, dtype=np.float64)
    height, width = raw.shape[0] // 2 * 2, raw.shape[1] // 2 * 2
    cells = raw[:height, :width]
    greens = GREENS.get(bayer.strip().upper())
    if greens is None:  # no mosaic: all four pixels count
        green = cells[0::2, 0::2] + cells[0::2, 1::2] + cells[1::2, 0::2] + cells[1::2, 1::2]
    else:
        (r1, c1), (r2, c2) = greens
        green = cells[r1::2, c1::2] + cells[r2::2, c2::2]
    brightest = np.maximum.reduce(
        [cells[0::2, 0::2], cells[0::2, 1::2], cells[1::2, 0::2], cells[1::2, 1::2]]
    )
    return Plane(green, brightest, saturation * adc_max)


def to_green(x_raw: float, y_raw: float) -> tuple[float, float]:
    """A raw pixel position (0-based) on the green plane: a cell's greens centre on its
    middle, (0.5, 0.5) in raw pixels."""
    return (x_raw - 0.5) / 2, (y_raw - 0.5) / 2


def to_raw(x_green: float, y_green: float) -> tuple[float, float]:
    return 2 * x_green + 0.5, 2 * y_green + 0.5


def inside(plane: Plane, x: float, y: float, margin: float) -> bool:
    height, width = plane.green.shape
    return margin <= x < width - margin and margin <= y < height - margin


def measure(
    plane: Plane,
    positions: list[tuple[float, float]],
    radius: float,
    gain: float,
    *,
    recentre: bool = True,
) -> list[Measured]:
    """Each star at `positions` (green pixels), in one aperture of `radius` green pixels,
    its sky from an annulus of 2 to 3 radii (at least 4 pixels wide)."""
    if not positions:
        return []
    inner, outer = 2 * radius, max(3 * radius, 2 * radius + 4)
    xs, ys = np.array([p[0] for p in positions]), np.array([p[1] for p in positions])
    if recentre:
        xs, ys = _recentred(plane.green, xs, ys, radius)
    centres = np.column_stack([xs, ys])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an annulus at the edge: its stats are nan
        skies = ApertureStats(
            plane.green, CircularAnnulus(centres, inner, outer), sigma_clip=_clip()
        )
        sky, sky_std = np.atleast_1d(skies.median), np.atleast_1d(skies.std)
        n_sky = np.atleast_1d(skies.sum_aper_area.value)
        aperture = CircularAperture(centres, radius)
        stars = ApertureStats(plane.green, aperture, local_bkg=sky)
        flux, n_ap = np.atleast_1d(stars.sum), np.atleast_1d(stars.sum_aper_area.value)
        fwhm = np.atleast_1d(stars.fwhm.value)
        peaks = np.atleast_1d(ApertureStats(plane.brightest, aperture).max)
    variance = np.maximum(flux, 0) / gain + n_ap * sky_std**2 * (1 + n_ap / np.maximum(n_sky, 1))
    return [
        Measured(
            float(xs[i]), float(ys[i]), float(flux[i]), float(math.sqrt(variance[i])),
            float(sky[i]), float(fwhm[i]), bool(peaks[i] >= plane.limit),
        )
        for i in range(len(positions))
    ]  # fmt: skip


def _recentred(
    green: np.ndarray, xs: np.ndarray, ys: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each position moved to its star's centroid (the WCS and a star's proper motion are
    a second or two off), unless that moves it further than RECENTRE (a neighbour)."""
    box = 2 * int(max(radius, 2)) + 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cx, cy = centroid_sources(green - np.median(green), xs, ys, box_size=box,
                                  centroid_func=centroid_com)  # fmt: skip
    moved = np.hypot(cx - xs, cy - ys)
    keep = np.isfinite(moved) & (moved <= RECENTRE)
    return np.where(keep, cx, xs), np.where(keep, cy, ys)


def _clip() -> object:
    from astropy.stats import SigmaClip

    return SigmaClip(sigma=3.0, maxiters=5)


def field_fwhm(plane: Plane, positions: list[tuple[float, float]], gain: float) -> float | None:
    """The median FWHM (green pixels) of the unsaturated stars at `positions` that stand
    well above their sky, or None when there are none."""
    measured = measure(plane, positions, FIRST_APERTURE, gain)
    widths = [m.fwhm for m in measured if m.usable and m.snr > 20 and math.isfinite(m.fwhm)]
    return float(np.median(widths)) if widths else None


def is_spike(star: Measured, fwhm: float) -> bool:
    """A source much narrower than the field's stars: a hot pixel, a cosmic ray."""
    return not math.isfinite(star.fwhm) or star.fwhm < SPIKE * fwhm
