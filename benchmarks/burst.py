"""A burst: 2,000 frames appearing at once, a no-op pipeline. All run exactly once?

Reports frames per second (first file written -> last pipeline.finished), and the
daemon's peak thread count and peak RSS, sampled every 20 ms.
Usage: python3 benchmarks/burst.py [FRAMES]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import Daemon, epoch, small_frame


def main(frames: int = 2000) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    folder = root / "share" / "MyWorks" / "M 42_sub"
    folder.mkdir(parents=True)
    daemon = Daemon(
        root,
        {
            "image_watcher": {
                "watch_path": str(folder.parent),
                "recursive": True,
                "observer": "native",
            },
            "pipeline": {"command": ["true"]},
        },
    )
    daemon.wait_for("watcher.started")
    peak = {"threads": 0, "rss": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["threads"] = max(peak["threads"], daemon.ps.num_threads())
            peak["rss"] = max(peak["rss"], daemon.ps.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    data = [small_frame(i) for i in range(4)]
    first = time.time()
    for i in range(frames):
        (folder / f"Light_{i:05d}.fit").write_bytes(data[i % 4])
        (folder / f"Light_{i:05d}.jpg").write_bytes(b"jpg")
    finished = daemon.wait_for("pipeline.finished", frames, timeout=600)
    time.sleep(3)  # any duplicate would show up now
    done.set()
    sampler.join()
    daemon.stop()
    last = max(epoch(e) for e in finished)
    names = [e["frame"] for e in daemon.events("pipeline.started")]
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "seestar_watch", "status", "--json", "-c", str(daemon.config)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    once = len(names) == len(set(names)) == frames == status["counts"]["done"]
    rate = frames / (last - first)
    print(
        f"runs={len(names)} distinct={len(set(names))} done={status['counts']['done']}"
        f" exactly_once={once}"
    )
    print(
        f"| burst of {frames} | {rate:.0f} frames/s | peak threads {peak['threads']}"
        f" | peak RSS {peak['rss'] / 2**20:.0f} MB | exactly once: {once} |"
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
