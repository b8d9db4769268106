"""The demo, run as a new user would: the real daemon on a pretend share, start to finish."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seestar_watch", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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
    table = out.split("frame ", 1)[1]
    assert table.count(" done ") == 3 and table.count(" rejected ") == 1
    assert (keep / "quicklook.csv").read_text().count("\n") == 4  # header + 3 rows
    assert len(list((keep / "archive").rglob("*.fit"))) == 3
    assert (keep / "state" / "ledger.sqlite3").exists()
    assert len(list((keep / "share" / "MyWorks" / "M 42_sub").glob("*_thn.jpg"))) == 3
    # what the demo promises to show: a temporary name renamed, and the jpg twins
    assert len(re.findall(r"scope\s+wrote .*\(via a \.tmp name, renamed\)", out)) == 1
    assert len(re.findall(r"scope\s+wrote .*\.jpg, _thn\.jpg twins", out)) == 3


def test_demo_cleans_up_after_itself() -> None:
    result = demo("--frames", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    share = re.search(r"pretend Seestar share in (\S+)", result.stdout)
    assert share is not None
    assert not Path(share.group(1)).parents[1].exists()
