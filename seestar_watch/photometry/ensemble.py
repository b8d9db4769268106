"""The zero point of a frame's comparison stars, and the target's magnitude with its error.

Each good comparison star gives a zero point, its catalogue magnitude less its instrumental
one. The frame's zero point is their weighted mean after outliers are rejected (3 times
their robust scatter, again until none goes: a variable, a blend, a wrong catalogue entry);
its error is the larger of what the weights say and the stars' own scatter over the root of
their number, so that catalogue errors and colour terms count. The target's error adds its
own photon and sky noise to that. Fewer than MIN_COMPARISONS good stars: no magnitude, and
the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_COMPARISONS = 3
REJECT = 3.0  # robust standard deviations beyond which a comparison star is an outlier
CATALOGUE_ERROR = 0.03  # mag, assumed for a comparison star whose catalogue gives none
MAG = 2.5 / math.log(10)  # 1.0857: mag per unit of relative flux error


@dataclass(frozen=True)
class Comparison:
    name: str
    catalogue: float  # its catalogue magnitude
    catalogue_err: float | None
    instrumental: float  # -2.5 log10(flux / exposure)
    instrumental_err: float


@dataclass(frozen=True)
class ZeroPoint:
    value: float
    error: float
    scatter: float  # the standard deviation of the stars' zero points
    used: tuple[str, ...]  # the comparison stars in it
    rejected: tuple[str, ...]  # left out as outliers


def instrumental(flux: float, flux_err: float, exposure: float) -> tuple[float, float]:
    """(magnitude, its error) of a flux in ADU over `exposure` seconds."""
    return -2.5 * math.log10(flux / exposure), MAG * flux_err / flux


def zero_point(stars: list[Comparison]) -> ZeroPoint | str:
    """The ensemble's zero point, or why there is none."""
    if len(stars) < MIN_COMPARISONS:
        plural = "" if len(stars) == 1 else "s"
        return f"{len(stars)} good comparison star{plural} in the field ({MIN_COMPARISONS} needed)"
    points = np.array([s.catalogue - s.instrumental for s in stars])
    errors = np.array(
        [math.hypot(s.instrumental_err, s.catalogue_err or CATALOGUE_ERROR) for s in stars]
    )
    keep = np.ones(len(stars), dtype=bool)
    while True:
        centre = np.median(points[keep])
        spread = 1.4826 * np.median(np.abs(points[keep] - centre))
        spread = max(spread, float(np.median(errors[keep])))
        outliers = keep & (np.abs(points - centre) > REJECT * spread)
        if not outliers.any() or keep.sum() - outliers.sum() < MIN_COMPARISONS:
            break
        keep &= ~outliers
    weights = 1 / errors[keep] ** 2
    value = float(np.sum(weights * points[keep]) / np.sum(weights))
    used = int(keep.sum())
    scatter = float(np.std(points[keep], ddof=1)) if used > 1 else 0.0
    error = max(1 / math.sqrt(float(np.sum(weights))), scatter / math.sqrt(used))
    names = [s.name for s in stars]
    return ZeroPoint(
        value,
        error,
        scatter,
        tuple(n for n, k in zip(names, keep, strict=True) if k),
        tuple(n for n, k in zip(names, keep, strict=True) if not k),
    )


def calibrated(inst: float, inst_err: float, zp: ZeroPoint) -> tuple[float, float]:
    """(magnitude, error) of an instrumental magnitude on the ensemble's zero point."""
    return inst + zp.value, math.hypot(inst_err, zp.error)
