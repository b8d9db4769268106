"""The demo, run as a new user would: the real daemon on a pretend share, start to finish."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import run_cli

pytestmark = pytest.mark.slow


def demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("demo", *args, env=env, timeout=120)


def test_demo_runs_every_frame_once_rejects_the_broken_one_and_keeps_what_it_made(
    tmp_path: Path,
) -> None:
    keep = tmp_path / "demo"
    result = demo("--frames", "3", "--keep", str(keep))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert len(re.findall(r"^\s*[\d.]+s\s+done\s", out, re.M)) == 3
    assert len(re.findall(r"^\s*[\d.]+s\s+rejected\s.*_broken\.fit", out, re.M)) == 1
    assert len(re.findall(r"^\s*[\d.]+s\s+measured\s.*stars=\d+", out, re.M)) == 3
    table = out.split("frame ", 1)[1].split("\ndemo: ", 1)[0]  # the quicklook part
    assert table.count(" done ") == 3 and table.count(" rejected ") == 1
    assert (keep / "quicklook.csv").read_text().count("\n") == 4  # header + 3 rows
    assert len(list((keep / "archive" / "M 42_sub").glob("*.fit"))) == 3
    assert (keep / "state" / "ledger.sqlite3").exists()
    assert len(list((keep / "share" / "MyWorks" / "M 42_sub").glob("*_thn.jpg"))) == 3
    # what the demo promises to show: a temporary name renamed, and the jpg twins
    assert len(re.findall(r"scope\s+wrote .*\(via a \.tmp name, renamed\)", out)) == 1
    assert len(re.findall(r"scope\s+wrote .*\.jpg, _thn\.jpg twins", out)) == 3
    photometry_part(out)


def photometry_part(out: str) -> None:
    """With a solver and an index: three frames of real sky solved and measured within their
    errors (the demo exits 1 otherwise), and their AAVSO report; without: how to install."""
    installed = shutil.which("solve-field") and list(Path("/usr/share/astrometry").glob("index-*"))
    if not installed:
        assert "sudo apt install astrometry.net astrometry-data-tycho2-09" in out
        return
    rows = re.findall(r"^Light_M 94_\S+\.fit\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", out, re.M)
    assert len(rows) == 3, out
    for truth, measured, error in rows:
        assert abs(float(measured) - float(truth)) <= 4 * float(error) + 0.02
    report = out.split("the AAVSO report", 1)[1]
    assert "#TYPE=EXTENDED" in report and "#OBSCODE=DEMO" in report
    assert len(re.findall(r"^  DEMO VAR,\d+\.\d+,", report, re.M)) == 3


def test_demo_cleans_up_after_itself_and_without_a_solver_says_how_to_get_one(
    tmp_path: Path,
) -> None:
    result = demo("--frames", "1", env={"PATH": str(tmp_path)})  # no solve-field
    assert result.returncode == 0, result.stdout + result.stderr
    assert "install a solver and its index: sudo apt install astrometry.net" in result.stdout
    share = re.search(r"pretend Seestar share in (\S+)", result.stdout)
    assert share is not None
    assert not Path(share.group(1)).parents[1].exists()
