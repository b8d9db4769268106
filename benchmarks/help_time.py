"""`seestar-watch --help` wall time, median of 20 runs (it must not import astropy or numpy).
Usage: python3 benchmarks/help_time.py
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time

from bench import percentile


def main(runs: int = 20) -> None:
    command = [shutil.which("seestar-watch") or "seestar-watch", "--help"]
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
