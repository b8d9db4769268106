"""The stars around a frame: comparison stars from a file, or Tycho-2 from the solver's index.

A comparison file is what an observer saved while still online: the AAVSO VSP photometry
table (its JSON, with the chart id, the target's position and each star's V magnitude), or
a plain CSV of `name,ra,dec,mag[,mag_err]`. With none, the Tycho-2 index files that
astrometry.net solves with carry each star's VT magnitude: comparison stars with no
preparation and no network, for monitoring (an AAVSO submission wants a VSP sequence).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astropy.io import fits

from seestar_watch.config import Target, parse_position

INDEX_FOLDER = Path("/usr/share/astrometry")  # Debian's astrometry-data-tycho2-* packages
SAME_STAR = 3.0 / 3600  # degrees: two entries this close are one star
COMPARISON_BAND = "V"  # VSP's band for the green plane's TG
LIMIT = 10_000  # stars a comparison file may hold
TYCHO = "Tycho-2 VT"  # the source of the comparison stars when no file is given


class CatalogueError(Exception):
    """A comparison file that cannot be used; the message says why, in one line."""


@dataclass(frozen=True)
class Star:
    name: str
    ra: float  # degrees
    dec: float
    mag: float
    mag_err: float | None = None  # None: not given (Tycho-2 VT: ~0.1 at VT 11)


@dataclass(frozen=True)
class Comparisons:
    stars: tuple[Star, ...]
    source: str  # "Tycho-2 VT" or the file's name
    chart: str | None = None  # the VSP chart id, for the report
    target: Target | None = None  # the variable the file was made for, when it says
    check: str | None = None  # the check star's name, when the file chooses one


def position_name(ra: float, dec: float) -> str:
    """An IAU-style name from a position: J125147.8+414130."""
    hours = ra / 15
    h, m = int(hours), int(hours * 60 % 60)
    s = hours * 3600 % 60
    sign = "+" if dec >= 0 else "-"
    d, dm = int(abs(dec)), int(abs(dec) * 60 % 60)
    ds = int(abs(dec) * 3600 % 60)
    return f"J{h:02d}{m:02d}{s:04.1f}{sign}{d:02d}{dm:02d}{ds:02d}"


def separation(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Degrees between two positions (haversine: exact at small angles)."""
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    a = math.sin((d2 - d1) / 2) ** 2 + math.cos(d1) * math.cos(d2) * math.sin((r2 - r1) / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(a))))


# -- Tycho-2, from the solver's own index files ------------------------------------------


def index_stars(ra: float, dec: float, radius: float, folder: Path | None = None) -> Comparisons:
    """Every Tycho-2 star the installed index files hold within `radius` degrees."""
    folder = folder or INDEX_FOLDER
    indexes = sorted(folder.glob("index-*.fits"))  # Debian's index-tycho2-09.littleendian.fits
    if not indexes or shutil.which("query-starkd") is None:
        raise CatalogueError(
            f"no Tycho-2 index in {folder} (Debian: apt install astrometry.net"
            " astrometry-data-tycho2-09-littleendian), and no --comps file"
        )
    found: list[Star] = []
    with_magnitudes = False
    with tempfile.TemporaryDirectory(prefix="seestar-watch-stars-") as work:
        for n, index in enumerate(indexes):
            table = Path(work) / f"{n}.fits"
            command = ["query-starkd", "-r", repr(ra), "-d", repr(dec), "-R", repr(radius)]
            command += ["-t", "MAG_VT", "-o", str(table), str(index)]
            subprocess.run(command, capture_output=True, timeout=30, check=False)
            stars = _stars_of(table) if table.exists() else None
            with_magnitudes |= stars is not None
            found += stars or []
    if not with_magnitudes:
        raise CatalogueError(
            f"the index files in {folder} carry no Tycho-2 VT magnitudes: give --comps"
        )
    return Comparisons(tuple(_unique(found)), TYCHO)


def _stars_of(table: Path) -> list[Star] | None:
    """The stars query-starkd wrote, or None when its index has no VT magnitudes."""
    with fits.open(table) as hdus:
        if len(hdus) < 2 or hdus[1].data is None:
            return []
        rows = hdus[1].data
        if "MAG_VT" not in rows.names:
            return None  # an index built from a catalogue without Tycho's VT magnitudes
        return [
            Star(position_name(float(r["RA"]), float(r["DEC"])), float(r["RA"]),
                 float(r["DEC"]), float(r["MAG_VT"]))
            for r in rows
            if math.isfinite(float(r["MAG_VT"]))
        ]  # fmt: skip


def _unique(stars: Iterable[Star]) -> list[Star]:
    """One entry per star (the index files overlap)."""
    kept: list[Star] = []
    for star in sorted(stars, key=lambda s: s.mag):
        if all(separation(star.ra, star.dec, k.ra, k.dec) > SAME_STAR for k in kept):
            kept.append(star)
    return kept


# -- a comparison file ---------------------------------------------------------------------


def load_comparisons(path: Path) -> Comparisons:
    """An AAVSO VSP table (JSON) or a plain CSV; CatalogueError in one line when unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"comparison file {path}: cannot read it ({exc})") from None
    if len(text) > 20_000_000:
        raise CatalogueError(f"comparison file {path}: larger than any comparison sequence")
    try:
        if text.lstrip().startswith("{"):
            return _vsp(json.loads(text), path)
        return _csv(text, path)
    except (ValueError, KeyError, TypeError) as exc:
        raise CatalogueError(f"comparison file {path}: {exc}") from None


def _vsp(answer: Any, path: Path) -> Comparisons:
    """The VSP chart API's JSON: chartid, star, ra, dec (sexagesimal), and `photometry`:
    auid, label, ra, dec, and bands of {band, mag, error}."""
    if not isinstance(answer, dict) or not isinstance(answer.get("photometry"), list):
        raise ValueError("not an AAVSO VSP photometry table (no `photometry` list)")
    stars = []
    for entry in answer["photometry"][:LIMIT]:
        band = next((b for b in entry.get("bands") or [] if b.get("band") == COMPARISON_BAND), None)
        if band is None or not isinstance(band.get("mag"), int | float):
            continue
        ra, dec = parse_position(f"{entry['ra']} {entry['dec']}")
        error = band.get("error")
        # the AUID, which the AAVSO's report "much prefers" to the chart's label (a label is
        # the magnitude x 10: two stars of a chart can share one)
        name = str(entry.get("auid") or entry.get("label") or position_name(ra, dec))
        stars.append(
            Star(name, ra, dec, float(band["mag"]), float(error) if error is not None else None)
        )
    if not stars:
        raise ValueError(f"no comparison star with a {COMPARISON_BAND} magnitude")
    target = None
    if answer.get("star") and answer.get("ra") and answer.get("dec"):
        ra, dec = parse_position(f"{answer['ra']} {answer['dec']}")
        target = Target(str(answer["star"]), ra, dec)
    chart = str(answer["chartid"]) if answer.get("chartid") else None
    return Comparisons(tuple(stars), path.name, chart, target)


def _csv(text: str, path: Path) -> Comparisons:
    """name,ra,dec,mag[,mag_err] (a header line; positions in degrees or sexagesimal);
    a row named `check` in a `role` column makes that star the check star."""
    rows = list(csv.DictReader(text.splitlines()))[:LIMIT]
    if not rows or not {"name", "ra", "dec", "mag"} <= set(rows[0]):
        raise ValueError("expected a CSV with the columns name, ra, dec, mag (and mag_err)")
    stars, check = [], None
    for n, row in enumerate(rows, start=2):
        try:
            ra, dec = parse_position(f"{row['ra']} {row['dec']}")
            mag = float(row["mag"])
            error = float(row["mag_err"]) if row.get("mag_err") else None
        except ValueError as exc:
            raise ValueError(f"line {n}: {exc}") from None
        if not math.isfinite(mag):
            raise ValueError(f"line {n}: the magnitude is not a number")
        stars.append(Star(row["name"].strip() or position_name(ra, dec), ra, dec, mag, error))
        if (row.get("role") or "").strip().lower() == "check":
            check = stars[-1].name
    return Comparisons(tuple(stars), path.name, check=check)
