"""Make docs/dashboard.png, the README's picture of the dashboard, again.

Runs `seestar-watch demo --keep` (a pretend night with the quicklook stage), serves its
ledger with `seestar-watch dashboard`, and has headless chromium photograph the page.
Needs chromium (Debian: apt-get install chromium).
Usage: python3 docs/screenshot.py [FRAMES]
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboard.png"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> int:
    frames = sys.argv[1] if len(sys.argv) > 1 else "24"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no chromium: apt-get install chromium", file=sys.stderr)
        return 1
    night = Path(tempfile.gettempdir()) / "seestar-watch-demo"  # the path the page shows
    shutil.rmtree(night, ignore_errors=True)
    seestar_watch = [sys.executable, "-m", "seestar_watch"]
    subprocess.run([*seestar_watch, "demo", "--frames", frames, "--keep", str(night)], check=True)
    port = free_port()
    config = str(night / "config.yaml")
    server = subprocess.Popen(
        [*seestar_watch, "dashboard", "-c", config, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
    )
    profile = tempfile.mkdtemp(prefix="screenshot-chromium-")
    try:
        assert server.stdout is not None
        server.stdout.readline()  # it is serving
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={profile}", "--window-size=1280,1060",
             "--virtual-time-budget=5000", f"--screenshot={OUT}", f"http://127.0.0.1:{port}/"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(night, ignore_errors=True)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
