"""Shared parts of the benchmark scripts: a daemon to measure, its log, frames, statistics.

Not part of the test suite: run the scripts by hand (see benchmarks/README.md).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.smbshare and tests.conftest

from seestar_watch.tools.synthetic import Sky, frame_bytes, header, star_field  # noqa: E402


def seestar_frame(seed: int = 0) -> bytes:
    """A full-size S50 sub (4 MB) with a star field."""
    return frame_bytes(Sky(stars=star_field(20, seed=1), seed=seed))


def small_frame(seed: int = 0) -> bytes:
    """A 64 x 64 frame: for bursts, where the work measured is not the bytes."""
    sky = Sky(stars=[], seed=seed)
    return frame_bytes(sky, header(width=64, height=64), width=64, height=64)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> str:
    return (
        f"n={len(values)} median={statistics.median(values):.4f}"
        f" p95={percentile(values, 0.95):.4f} max={max(values):.4f}"
    )


class Daemon:
    """`seestar-watch run` in a subprocess with JSON logs collected from its stderr."""

    def __init__(self, root: Path, settings: dict[str, Any], *args: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        settings.setdefault("logging", {"format": "json", "level": "info"})
        settings.setdefault("archive", {"path": str(root / "archive")})
        settings.setdefault("state", {"path": str(root / "state" / "ledger.sqlite3")})
        self.config = root / "config.yaml"
        self.config.write_text(yaml.safe_dump(settings))
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "seestar_watch", "run", "-c", str(self.config), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.ps = psutil.Process(self.process.pid)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.entries.append(entry)

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.entries if e.get("event") == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 120) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"{name} x{count} not seen; daemon exit {self.process.poll()}")

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def epoch(entry: dict[str, Any]) -> float:
    """A log entry's timestamp (local ISO time) as seconds since the epoch."""
    return datetime.fromisoformat(entry["timestamp"]).timestamp()


def write_file(path: Path, data: bytes) -> float:
    """Write and close a file; the time of its last write."""
    with path.open("wb") as out:
        out.write(data)
    return time.time()


def by_frame(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {os.path.basename(str(e.get("frame", ""))): e for e in entries}
