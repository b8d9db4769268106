"""Detection latency on a local folder, next to inotifywait watching the same writes.

For each full-size frame: its last write -> `pipeline.started` in the daemon's log, minus
debounce_delay (the wait the user asked for) = seestar-watch's overhead; and its last
write -> inotifywait printing its close_write event, for comparison.
Usage: python3 benchmarks/latency_local.py [FRAMES]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import Daemon, by_frame, epoch, percentile, seestar_frame, summary, write_file

DEBOUNCE = 1.0


def main(frames: int = 40) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    folder = root / "share" / "MyWorks"
    folder.mkdir(parents=True)
    seen: dict[str, float] = {}
    watcher = subprocess.Popen(
        ["inotifywait", "-m", "-q", "-e", "close_write", "--format", "%f", str(folder)],
        stdout=subprocess.PIPE,
        text=True,
    )

    def read_inotify() -> None:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            seen.setdefault(line.strip(), time.time())

    threading.Thread(target=read_inotify, daemon=True).start()
    daemon = Daemon(
        root,
        {
            "image_watcher": {
                "watch_path": str(folder),
                "debounce_delay": DEBOUNCE,
                "observer": "native",
            },
            "pipeline": {"command": ["true"]},
        },
    )
    daemon.wait_for("watcher.started")
    data = seestar_frame()
    written = {}
    for i in range(frames):
        name = f"Light_{i:04d}.fit"
        written[name] = write_file(folder / name, data)
        time.sleep(DEBOUNCE * 1.6)
    daemon.wait_for("pipeline.finished", frames)
    daemon.stop()
    watcher.terminate()
    started = by_frame(daemon.events("pipeline.started"))
    ours = [epoch(started[n]) - written[n] - DEBOUNCE for n in written]
    theirs = [seen[n] - written[n] for n in written if n in seen]
    print(f"seestar-watch overhead (s): {summary(ours)}")
    print(f"inotifywait latency (s):    {summary(theirs)}")
    print(
        f"| detection overhead, local, native | {percentile(ours, 0.5) * 1000:.1f} ms"
        f" | {percentile(ours, 0.95) * 1000:.1f} ms | inotifywait: median"
        f" {percentile(theirs, 0.5) * 1000:.2f} ms, p95 {percentile(theirs, 0.95) * 1000:.2f} ms |"
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
