"""The photometry stage: how long a frame takes, and how steady and how right its magnitudes are.

Usage: python3 photometry.py speed [RUNS] [FRAME...]
       python3 photometry.py accuracy [FRAMES] [REAL_FRAME...]

`speed`: per frame, the stage in-process (solve + photometry, with the solver's own figure
beside it) and the whole `seestar-watch photometry FRAME --json` command (interpreter start
and imports included), with the command's peak memory; on synthetic frames of Tycho-2's own
stars with no WCS (so that the solver works) and on each real FRAME given.

`accuracy`: (1) a night of FRAMES synthetic subs of Tycho-2's sky around M 94 (photon, sky and
read noise, seeing from 2.2 to 2.8 px): the scatter of a constant V ~ 10 star's magnitude
from frame to frame, and its mean offset from the truth; (2) on each REAL_FRAME, every
Tycho-2 star of VT < 11.5 measured in turn as the target against the others: the spread and
the median of (measured - VT), the offset from the catalogue a single real sub gives.

Needs astrometry.net and a Tycho-2 index (Debian: apt install astrometry.net
astrometry-data-tycho2-09-littleendian).
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import percentile

from seestar_watch.config import PhotometryConfig, Target
from seestar_watch.photometry import catalogue, stage
from seestar_watch.tools.synthetic import Field, SkyStar, field_frame

FIELD = (192.78, 41.12)  # around M 94: a few dozen Tycho-2 stars in an S50's field
COMMAND = Path(sys.executable).with_name("seestar-watch")


def sky_stars() -> tuple[tuple[SkyStar, ...], SkyStar]:
    """Tycho-2's stars around FIELD, and the V ~ 10 one nearest the centre (the target)."""
    stars = catalogue.index_stars(*FIELD, 0.8).stars
    near = [s for s in stars if catalogue.separation(s.ra, s.dec, *FIELD) < 0.25]
    target = min((s for s in near if 9.5 < s.mag < 11), key=lambda s: abs(s.mag - 10))
    return tuple(SkyStar(s.ra, s.dec, s.mag) for s in stars), SkyStar(
        target.ra, target.dec, target.mag
    )


def request(target: SkyStar) -> stage.Request:
    name = catalogue.position_name(target.ra, target.dec)
    return stage.Request(Target(name, target.ra, target.dec), None, None, PhotometryConfig())


def speed(runs: int, real: list[Path]) -> None:
    stars, target = sky_stars()
    with tempfile.TemporaryDirectory() as work:
        frames = []
        for n in range(runs):
            path = Path(work) / f"sky-{n}.fit"
            path.write_bytes(field_frame(Field(*FIELD, stars, with_wcs=False, seed=n)))
            frames.append((path, target))
        for path in real:
            copy = Path(work) / path.name  # never the original: the stage works on a copy
            shutil.copyfile(path, copy)
            frames += [(copy, None)] * runs
        synthetic = [f for f in frames if f[1] is not None]
        report("synthetic sub of Tycho-2's sky, no WCS", synthetic)
        for path in real:
            report(f"real sub {path.name}", [f for f in frames if f[0].name == path.name])


def report(what: str, frames: list[tuple[Path, SkyStar | None]]) -> None:
    stage_s, solve_s, command_s = [], [], []
    for path, target in frames:
        aimed = target or SkyStar(192.81, 40.7758, 9.695)  # TYC 3020-2004-1 on the M 94 sub
        started = time.perf_counter()
        result = stage.run(path, request(aimed))
        stage_s.append(time.perf_counter() - started)
        solve_s.append(result["solve_s"] or float("nan"))
        argv = [str(COMMAND), "photometry", str(path), "--json",
                "--target", f"{aimed.ra} {aimed.dec}"]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        command_s.append(time.perf_counter() - started)
        json.loads(done.stdout)  # one result object, or this fails loudly
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"| {what} | stage {statistics.median(stage_s):.2f} s median"
        f" (p95 {percentile(stage_s, 0.95):.2f}), solve {statistics.median(solve_s):.2f} s;"
        f" whole command {statistics.median(command_s):.2f} s median"
        f" (p95 {percentile(command_s, 0.95):.2f}); peak RSS {peak:.0f} MB; n={len(frames)} |"
    )


def accuracy(count: int, real: list[Path]) -> None:
    stars, target = sky_stars()
    measured = []
    with tempfile.TemporaryDirectory() as work:
        for n in range(count):
            seeing = 2.2 + 0.6 * (n % 7) / 6  # green pixels of a soft and a sharp night
            field = Field(*FIELD, stars, fwhm=2 * seeing, with_wcs=False, seed=100 + n)
            path = Path(work) / f"night-{n}.fit"
            path.write_bytes(field_frame(field))
            result = stage.run(path, request(target))
            if result["mag"] is not None:
                measured.append((result["mag"], result["mag_err"]))
    mags = [m for m, _ in measured]
    print(
        f"| synthetic night, a constant V {target.mag:.2f} star, {len(mags)} of {count} subs |"
        f" scatter {statistics.stdev(mags) * 1000:.1f} mmag, mean offset"
        f" {(statistics.mean(mags) - target.mag) * 1000:+.1f} mmag, median stated error"
        f" {statistics.median(e for _, e in measured) * 1000:.1f} mmag |"
    )
    for path in real:
        leave_one_out(path)


def leave_one_out(path: Path) -> None:
    """Every Tycho-2 star of VT < 11.5 in the real frame, measured as the target against
    the rest: (measured - VT) over the field."""
    with tempfile.TemporaryDirectory() as work:
        copy = Path(work) / path.name
        shutil.copyfile(path, copy)
        around = catalogue.index_stars(*_pointing(copy), 0.6).stars  # the mount's RA/DEC
        offsets, errors = [], []
        for star in (s for s in around if s.mag < 11.5):
            result = stage.run(copy, request(SkyStar(star.ra, star.dec, star.mag)))
            if result["mag"] is not None:
                offsets.append(result["mag"] - star.mag)
                errors.append(result["mag_err"])
    offsets.sort()
    spread = (percentile(offsets, 0.84) - percentile(offsets, 0.16)) / 2
    print(
        f"| real sub {path.name}: {len(offsets)} Tycho-2 stars of VT < 11.5, each against the"
        f" others | median offset {statistics.median(offsets):+.3f} mag, spread (16-84 %)"
        f" +-{spread:.3f} mag, median stated error {statistics.median(errors):.3f} mag |"
    )


def _pointing(path: Path) -> tuple[float, float]:
    from astropy.io import fits

    header = fits.getheader(path)
    return float(header["RA"]), float(header["DEC"])


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "speed"
    number = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    paths = [Path(p) for p in sys.argv[3:]]
    {"speed": speed, "accuracy": accuracy}[kind](number, paths)
