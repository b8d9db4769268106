"""A night of frames through a 2 s pipeline, local against Celery, with 1, 2 and 4 workers.

Local: one daemon with pipeline.workers = N. Celery: the same daemon with executor: celery
and N `seestar-watch worker` processes (one frame at a time each) on a redis-server on
loopback. The frames are all there at the start (a night caught up after an outage).

Reports, per side and N: frames per second, per worker; the latency the queue adds per
frame (the daemon's pipeline.submitted -> pipeline.finished, minus the run's own duration
as the worker measured it; locally pipeline.started -> finished minus the duration); and
the cost of an idle worker (CPU s/min and RSS over IDLE seconds with nothing to do).
Needs redis-server (apt-get install redis-server).
Usage: python3 benchmarks/taskqueue.py [FRAMES] [IDLE]
"""

from __future__ import annotations

import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml
from bench import Daemon, epoch, percentile, small_frame

WORK = ["sleep", "2"]  # the 2 s pipeline (no interpreter start to blur the figures)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def settings(root: Path, workers: int, broker: str | None) -> dict[str, object]:
    pipeline: dict[str, object] = {"command": WORK, "workers": workers, "timeout": 30}
    if broker:
        pipeline.update(executor="celery", broker=broker)
    return {
        "image_watcher": {"watch_path": str(root / "share"), "observer": "native"},
        "pipeline": pipeline,
        "state": {"path": str(root / "state" / "ledger.sqlite3"), "process_existing": True},
        "archive": {"path": str(root / "archive")},
        "dashboard": {"listen": False},
    }


def night(root: Path, frames: int, workers: int, broker: str | None) -> dict[str, float]:
    share = root / "share" / "M 42_sub"
    share.mkdir(parents=True)
    for n in range(frames):
        (share / f"Light_{n:04d}.fit").write_bytes(small_frame(n % 4))
    pool = []
    if broker:
        config = root / "worker.yaml"
        config.write_text(yaml.safe_dump(settings(root, 1, broker)))
        command = [sys.executable, "-m", "seestar_watch", "worker", "-c", str(config)]
        pool = [
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(workers)
        ]
        time.sleep(3)  # the workers connect before the night starts
    started = time.time()
    daemon = Daemon(root, settings(root, workers, broker))
    finished = daemon.wait_for("pipeline.finished", frames, timeout=frames * 10 + 60)
    daemon.stop()
    for worker in pool:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    begun = {
        e["frame"]: epoch(e)
        for e in daemon.events("pipeline.submitted" if broker else "pipeline.started")
    }
    added = [
        (epoch(e) - begun[e["frame"]] - e["duration_s"]) * 1000
        for e in finished
        if e["frame"] in begun
    ]
    first = min(begun.values())
    wall = max(epoch(e) for e in finished) - first
    return {
        "rate": frames / wall,
        "per_worker": frames / wall / workers,
        "added_median": statistics.median(added),
        "added_p95": percentile(added, 0.95),
        "startup": first - started,
    }


def idle_worker(root: Path, broker: str, seconds: float) -> tuple[float, float]:
    root.mkdir(parents=True)
    config = root / "worker.yaml"
    config.write_text(yaml.safe_dump(settings(root, 1, broker)))
    worker = subprocess.Popen(
        [sys.executable, "-m", "seestar_watch", "worker", "-c", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    process = psutil.Process(worker.pid)
    time.sleep(5)  # started up and connected: what follows is the idle cost
    before = sum(process.cpu_times()[:2])
    time.sleep(seconds)
    cpu = sum(process.cpu_times()[:2]) - before
    rss = process.memory_info().rss
    worker.send_signal(signal.SIGTERM)
    worker.wait(60)
    return cpu / seconds * 60, rss / 2**20


def main(frames: int = 16, idle: float = 60) -> None:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        sys.exit("redis-server is not installed: apt-get install redis-server")
    root = Path(tempfile.mkdtemp(prefix="bench-taskqueue-"))
    port = free_port()
    redis = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    broker = f"redis://127.0.0.1:{port}/0"
    time.sleep(1)
    try:
        print("| workers | side | frames/s | per worker | added latency median | p95 |")
        for workers in (1, 2, 4):
            for side, url in (("local", None), ("celery", broker)):
                figures = night(root / f"{side}-{workers}", frames, workers, url)
                print(
                    f"| {workers} | {side} | {figures['rate']:.2f} | {figures['per_worker']:.3f}"
                    f" | {figures['added_median']:.1f} ms | {figures['added_p95']:.1f} ms |",
                    flush=True,
                )
        cpu, rss = idle_worker(root / "idle", broker, idle)
        print(f"| idle worker, {idle:g} s | {cpu:.3f} CPU s/min | RSS {rss:.0f} MB |")
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(*(float(a) if "." in a else int(a) for a in sys.argv[1:]))  # type: ignore[arg-type]
