"""Idle cost: CPU seconds per minute of a daemon with nothing to do.

native: a local folder watched with inotify. polling: the SMB test bed (Samba + smbnetfs,
root only) holding 2,000 frames and their jpg twins in 20 target folders, polled every 2 s;
large: the same with 20,000 frames (1,000 per folder).
Each is measured over MINUTES minutes after start-up has settled (rescans included).
Usage: python3 benchmarks/idle_cpu.py [native|polling|large|both] [MINUTES]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import Daemon, small_frame


def measure(daemon: Daemon, minutes: float) -> float:
    daemon.wait_for("watcher.started", timeout=300)
    daemon.wait_for("scan.finished", timeout=300) if daemon.events("scan.finished") else None
    time.sleep(5)  # start-up and the first catch-up scan are not idle
    before, started = daemon.ps.cpu_times(), time.monotonic()
    time.sleep(minutes * 60)
    after, elapsed = daemon.ps.cpu_times(), (time.monotonic() - started) / 60
    print(
        f"  user {(after.user - before.user) / elapsed:.3f} s/min,"
        f" system {(after.system - before.system) / elapsed:.3f} s/min"
    )
    return (after.user + after.system - before.user - before.system) / elapsed


def native(minutes: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    folder = root / "MyWorks"
    folder.mkdir()
    daemon = Daemon(
        root,
        {
            "image_watcher": {"watch_path": str(folder), "observer": "native", "recursive": True},
            "pipeline": {"command": ["true"]},
        },
    )
    cost = measure(daemon, minutes)
    daemon.stop()
    print(f"| idle, native events, local folder | {cost:.3f} CPU s/min |")
    shutil.rmtree(root, ignore_errors=True)


def polling(minutes: float, per_folder: int = 100) -> None:
    from tests.smbshare import SambaShare, why_unavailable

    reason = why_unavailable()
    if reason:
        print(f"polling: skipped: {reason}")
        return
    root = Path(tempfile.mkdtemp(prefix="bench-idle-smb-"))
    share = SambaShare(root / "smb")
    share.up()
    try:
        data = small_frame()
        for target in range(20):
            folder = share.server / "MyWorks" / f"Target {target:02d}_sub"
            folder.mkdir(parents=True)
            for i in range(per_folder):
                (folder / f"Light_{i:04d}.fit").write_bytes(data)
                (folder / f"Light_{i:04d}.jpg").write_bytes(b"jpg")
        daemon = Daemon(
            root / "daemon",
            {
                "image_watcher": {
                    "watch_path": str(share.share / "MyWorks"),
                    "recursive": True,
                    "observer": "auto",
                    "poll_interval": 2.0,
                    "mount_point": str(share.mount_point),
                },
                "pipeline": {"command": ["true"]},
            },
        )
        cost = measure(daemon, minutes)
        observer = daemon.events("watcher.started")[0]["observer"]
        daemon.stop()
        print(
            f"| idle, {observer} every 2 s, SMB share with {20 * per_folder:,} frames +"
            f" {20 * per_folder:,} jpg in 20 folders | {cost:.3f} CPU s/min |"
        )
    finally:
        share.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "both"
    minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    if which in ("native", "both"):
        native(minutes)
    if which in ("polling", "both"):
        polling(minutes)
    if which in ("large", "both"):
        polling(minutes, per_folder=1000)
