"""`seestar-watch --help` wall time, median of 20 runs (it must not import astropy or numpy).
Usage: python3 benchmarks/help_time.py
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import percentile


def main(runs: int = 20) -> None:
    # the seestar-watch beside this Python (a venv's bin/ need not be on PATH)
    beside = Path(sys.executable).with_name("seestar-watch")
    command = [str(beside) if beside.exists() else shutil.which("seestar-watch") or "", "--help"]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    print(
        f"| seestar-watch --help | {statistics.median(times) * 1000:.0f} ms median,"
        f" {percentile(times, 0.95) * 1000:.0f} ms p95 ({runs} runs) |"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
