"""Detection latency on the SMB test bed (Samba + smbnetfs, root only), with polling.

Frames are written server-side, as a telescope writes them; latency is the last write ->
`pipeline.started`, to compare with poll_interval + debounce_delay + 0.5 s.
Usage: python3 benchmarks/latency_smb.py [FRAMES]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import Daemon, by_frame, epoch, percentile, seestar_frame, summary, write_file

POLL, DEBOUNCE = 2.0, 2.0


def main(frames: int = 15) -> None:
    from tests.smbshare import SambaShare, why_unavailable

    reason = why_unavailable()
    if reason:
        print(f"skipped: {reason}")
        return
    root = Path(tempfile.mkdtemp(prefix="bench-smb-latency-"))
    share = SambaShare(root / "smb")
    share.up()
    try:
        daemon = Daemon(
            root / "daemon",
            {
                "image_watcher": {
                    "watch_path": str(share.share / "MyWorks"),
                    "recursive": True,
                    "observer": "auto",
                    "poll_interval": POLL,
                    "debounce_delay": DEBOUNCE,
                    "mount_point": str(share.mount_point),
                },
                "pipeline": {"command": ["true"]},
            },
        )
        observer = daemon.wait_for("watcher.started", timeout=120)[0]["observer"]
        folder = share.server / "MyWorks" / "M 42_sub"
        folder.mkdir()
        data = seestar_frame()
        written = {}
        for i in range(frames):
            name = f"Light_{i:04d}.fit"
            written[name] = write_file(folder / name, data)
            time.sleep(POLL + DEBOUNCE + 1.0)
        daemon.wait_for("pipeline.finished", frames, timeout=120)
        daemon.stop()
        started = by_frame(daemon.events("pipeline.started"))
        latency = [epoch(started[n]) - written[n] for n in written]
        print(f"latency (s): {summary(latency)}")
        print(
            f"| detection latency, SMB, {observer} every {POLL:g} s, debounce {DEBOUNCE:g} s"
            f" | {percentile(latency, 0.5):.2f} s | {percentile(latency, 0.95):.2f} s"
            f" | target p95 <= {POLL + DEBOUNCE + 0.5:g} s |"
        )
    finally:
        share.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
