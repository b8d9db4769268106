"""Where a frame points: its WCS, solved offline, never written into the frame.

Debian's astrometry.net (`solve-field`, with the Tycho-2 index packages) is the default;
ASTAP (`astap_cli` and its star database) is used instead when configured. Both run on the
archived copy with every output in a temporary folder of their own, bounded by a timeout,
their whole process group stopped when it runs out. A frame whose header already holds a
celestial WCS (a stack, or a sub a later tool solved) is not solved again. The header's
RA/DEC hint is the pointing (about 10' off the field centre on an S50), and the scale
comes from XPIXSZ and FOCALLEN (2.39"/px for an S50).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

ARCSEC_PER_RADIAN = 206_264.806
S50_SCALE = 2.39  # arcsec per raw pixel: 2.9 um pixels at 250 mm
SCALE_SLACK = 0.12  # the scale searched is the header's +- this fraction
SEARCH_RADIUS = 2.0  # degrees around the header's RA/DEC (the pointing, not the centre)


class NotSolved(Exception):
    """Why a frame has no solution (a result, never a traceback)."""


@dataclass(frozen=True)
class Solution:
    wcs: WCS
    solver: str  # "header", "astrometry.net" or "astap"
    seconds: float


def pixel_scale(header: dict[str, Any]) -> float:
    """Arcseconds per raw pixel from XPIXSZ (um) and FOCALLEN (mm), or the S50's."""
    size, focal = header.get("XPIXSZ"), header.get("FOCALLEN")
    if isinstance(size, int | float) and isinstance(focal, int | float) and size > 0 < focal:
        return float(size) * 1e-3 / float(focal) * ARCSEC_PER_RADIAN
    return S50_SCALE


def header_wcs(header: fits.Header, shape: tuple[int, int]) -> WCS | None:
    """The frame's own celestial WCS when it has a usable one (its scale within a factor of
    two of the optics'), else None."""
    if not str(header.get("CTYPE1", "")).startswith("RA--"):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=2)
        except Exception:  # a tool's broken keywords: solve it instead
            return None
    if not wcs.has_celestial:
        return None
    scale = _scale_of(wcs)
    expected = pixel_scale(dict(header))
    return wcs if expected / 2 < scale < expected * 2 and shape[0] > 0 else None


def _scale_of(wcs: WCS) -> float:
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(proj_plane_pixel_scales(wcs).mean() * 3600)


def solve(
    path: Path,
    header: fits.Header,
    shape: tuple[int, int],
    *,
    solver: str = "auto",
    timeout: float = 30.0,
    index_folder: Path | None = None,
    astap_database: Path | None = None,
) -> Solution:
    """The frame's WCS: its own, or solved offline; NotSolved with the reason."""
    started = time.monotonic()
    own = header_wcs(header, shape)
    if own is not None:
        return Solution(own, "header", 0.0)
    use = solver
    if use == "auto":
        use = "astap" if astap_database is not None and shutil.which("astap_cli") else "astrometry"
    hint = _hint(header)
    with tempfile.TemporaryDirectory(prefix="seestar-watch-solve-") as work:
        if use == "astap":
            found = _astap(path, Path(work), hint, timeout, astap_database)
        else:
            found = _astrometry(path, Path(work), hint, timeout, index_folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(fits.Header.fromfile(found) if found.suffix == ".wcs" else found)
    if not wcs.has_celestial:
        raise NotSolved(f"{use} wrote no celestial solution")
    return Solution(
        wcs, "astap" if use == "astap" else "astrometry.net", time.monotonic() - started
    )


@dataclass(frozen=True)
class _Hint:
    ra: float | None
    dec: float | None
    scale: float


def _hint(header: fits.Header) -> _Hint:
    ra, dec = header.get("RA"), header.get("DEC")
    usable = isinstance(ra, int | float) and isinstance(dec, int | float) and -90 <= dec <= 90
    return _Hint(
        float(ra) % 360 if usable else None,
        float(dec) if usable else None,
        pixel_scale(dict(header)),
    )


def _astrometry(
    path: Path, work: Path, hint: _Hint, timeout: float, index_folder: Path | None
) -> Path:
    """solve-field, hinted, outputs in `work`; the .wcs file it wrote."""
    if shutil.which("solve-field") is None:
        raise NotSolved(
            "solve-field is not installed (Debian: apt install astrometry.net"
            " astrometry-data-tycho2-09-littleendian)"
        )
    command = [
        "solve-field", str(path), "--dir", str(work), "--temp-dir", str(work),
        "--scale-units", "arcsecperpix",
        "--scale-low", f"{hint.scale * (1 - SCALE_SLACK):.3f}",
        "--scale-high", f"{hint.scale * (1 + SCALE_SLACK):.3f}",
        "--downsample", "2", "--no-plots", "--overwrite", "--new-fits", "none",
        "--no-verify", "--cpulimit", str(max(1, round(timeout))),
        # its Python line remover and uniformizer cost a second and a half a frame and
        # change nothing on a Seestar's few hundred round stars
        "--no-remove-lines", "--uniformize", "0",
        "--out", "frame",
    ]  # fmt: skip
    if hint.ra is not None and hint.dec is not None:
        command += ["--ra", f"{hint.ra:.5f}", "--dec", f"{hint.dec:.5f}"]
        command += ["--radius", str(SEARCH_RADIUS)]
    if index_folder is not None:
        config = work / "astrometry.cfg"
        config.write_text(f"add_path {index_folder}\nautoindex\ninparallel\n")
        command += ["--config", str(config)]
    said = _run(command, timeout, grace=5)  # its own --cpulimit stops it first
    solution = work / "frame.wcs"
    if not solution.exists():
        last = said.strip().splitlines()[-1] if said.strip() else "no output"
        raise NotSolved(f"solve-field found no solution ({last[:160]})")
    return solution


def _astap(path: Path, work: Path, hint: _Hint, timeout: float, database: Path | None) -> Path:
    """astap_cli, hinted, on a copy in `work` (it writes next to its input); the .wcs file."""
    if shutil.which("astap_cli") is None:
        raise NotSolved("astap_cli is not installed (Debian: apt install astap-cli)")
    copy = work / "frame.fit"
    shutil.copyfile(path, copy)  # ASTAP writes beside the file it solves: never the archive
    command = ["astap_cli", "-f", str(copy), "-wcs", "-r", "30", "-z", "2"]
    command += ["-fov", f"{hint.scale * 1920 / 3600:.2f}"]
    if hint.ra is not None and hint.dec is not None:
        command += ["-ra", f"{hint.ra / 15:.5f}", "-spd", f"{hint.dec + 90:.5f}"]
    if database is not None:
        command += ["-d", str(database)]
    said = _run(command, timeout)
    solution = work / "frame.wcs"
    if not solution.exists():
        last = said.strip().splitlines()[-1] if said.strip() else "no output"
        raise NotSolved(f"astap found no solution ({last[:160]})")
    return solution


def _run(command: list[str], timeout: float, grace: float = 0) -> str:
    """Run a solver in its own process group; its output; NotSolved after `timeout` (and
    `grace` seconds more, for a solver that keeps to a CPU limit of its own)."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "TMPDIR": str(Path(command[command.index("--temp-dir") + 1]))}
        if "--temp-dir" in command
        else None,
    )
    try:
        output, _ = process.communicate(timeout=timeout + grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise NotSolved(f"no solution within {timeout:g} s") from None
    return output.decode(errors="replace")
