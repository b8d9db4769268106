"""The ledger at scale: with 100,000 rows, a rescan of a 2,000-frame tree, and `status`.

The rescan is the daemon's own catch-up (list the tree, ask the ledger about each
version); `status` is timed as the command a user types (wall time, interpreter start
included) and as the report alone.
Usage: python3 benchmarks/ledger_scale.py
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench import small_frame

from seestar_watch.config import load_config
from seestar_watch.daemon import Daemon
from seestar_watch.history import History
from seestar_watch.intake import FirstStart, Intake
from seestar_watch.ledger import Ledger
from seestar_watch.report import status_report
from seestar_watch.sources import Version


class CountingSettle:
    """Stands in for settle: counts what a rescan would hand it."""

    def __init__(self) -> None:
        self.noticed = 0

    def notice(self, relpath: str) -> bool:
        self.noticed += 1
        return True


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    share = root / "MyWorks"
    data = small_frame()
    tree = []
    for target in range(20):
        folder = share / f"Target {target:02d}_sub"
        folder.mkdir(parents=True)
        for i in range(100):
            path = folder / f"Light_{i:03d}.fit"
            path.write_bytes(data)
            (folder / f"Light_{i:03d}.jpg").write_bytes(b"jpg")
            tree.append(path)
    config_path = root / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "image_watcher": {"watch_path": str(share), "recursive": True},
                "pipeline": {"command": ["true"]},
                "state": {"path": str(root / "ledger.sqlite3")},
            }
        )
    )
    config = load_config(config_path)
    ledger = Ledger.open(config.state.ledger)
    old = (
        Version(f"Old {n // 1000:03d}_sub/Light_{n:06d}.fit", 4_152_960, n)
        for n in range(100_000 - len(tree))
    )
    ledger.record_baseline(old)
    daemon = Daemon(config)  # its source and share supervisor, as `run` builds them
    intake = Intake(
        config.image_watcher,
        daemon.source,
        ledger,
        daemon.share,
        on_pending=lambda: None,
        first_start=FirstStart(new_ledger=False, run_existing=False, asked=False, started_at=None),
    )
    # the tree's frames are known too (done), as on a night already processed
    for path in tree:
        info = path.stat()
        ledger.add_pending(
            Version(str(path.relative_to(share)), info.st_size, info.st_mtime_ns), {}
        )
    rows = sum(History(ledger).counts().values())
    scans = []
    for _ in range(5):
        watcher = CountingSettle()
        intake._settle = watcher  # type: ignore[assignment]
        started = time.perf_counter()
        intake._catch_up()
        scans.append(time.perf_counter() - started)
    ledger.close()
    reports = []
    for _ in range(5):
        started = time.perf_counter()
        status_report(config, 20)
        reports.append(time.perf_counter() - started)
    walls = []
    for _ in range(10):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "seestar_watch", "status", "-c", str(config_path)],
            check=True,
            capture_output=True,
        )
        walls.append(time.perf_counter() - started)
    print(f"rows={rows} new in rescan={watcher.noticed}")
    print(f"| rescan of 2,000 frames, ledger of {rows:,} rows | {statistics.median(scans):.3f} s |")
    print(
        f"| status, ledger of {rows:,} rows | {statistics.median(walls):.3f} s wall"
        f" ({statistics.median(reports) * 1000:.1f} ms for the report itself) |"
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
