"""The dashboard with a 100,000-row ledger: API answer times, the page's first load, idle cost.

The ledger holds 30 nights of ~3,333 frames (10 s apart, 20:00 to 05:00), each with a
real Seestar header and a quicklook result; 1 % failed, 0.5 % rejected. Measured:
- /api/status and /api/frames?since=<a minute ago> (what the page asks every 5 s), and the
  night's first page of /api/frames, over HTTP from `seestar-watch dashboard`;
- the page's first load in headless chromium (needs chromium and chromedriver): from
  navigation to every frame of the night fetched and drawn;
- the CPU a daemon's dashboard adds while no browser looks: two idle daemons side by side
  on copies of the ledger, one with `dashboard.listen`, one with it off, over MINUTES.
Usage: python3 benchmarks/dashboard.py [MINUTES]
"""

from __future__ import annotations

import http.client
import json
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from astropy.io import fits
from bench import ROOT, Daemon, percentile

from seestar_watch.history import History
from seestar_watch.ledger import Ledger

NIGHTS, PER_NIGHT = 30, 3_334  # 100,020 frames


def real_header() -> dict[str, object]:
    raw = (ROOT / "tests" / "data" / "s50_fw427_m94.hdr").read_bytes()
    header = fits.Header.fromstring(raw.decode("ascii"))
    return {
        key: value for key, value in header.items() if key and key not in ("COMMENT", "HISTORY")
    }


def build_ledger(path: Path) -> None:
    Ledger.open(path).close()  # the schema, as the daemon makes it
    base = real_header()
    rng = random.Random(1)
    today = datetime.now().astimezone().replace(hour=5, minute=0, second=0, microsecond=0)
    rows = []
    for night in range(NIGHTS):
        start = today - timedelta(days=NIGHTS - night, hours=-15)  # 20:00, NIGHTS days ago
        for n in range(PER_NIGHT):
            when = start + timedelta(seconds=10 * n)
            target = ("M 42", "NGC 2244")[n * 2 // PER_NIGHT]
            header = {**base, "OBJECT": target, "DATE-OBS": when.astimezone(UTC).isoformat()[:26]}
            state = (
                "failed" if rng.random() < 0.01 else "rejected" if rng.random() < 0.005 else "done"
            )
            result = {
                "background": round(1200 + rng.gauss(0, 30), 1),
                "noise": round(11 + rng.gauss(0, 0.5), 3),
                "stars": rng.randint(20, 60),
                "fwhm_px": round(3.5 + rng.gauss(0, 0.3), 3),
                "fwhm_arcsec": round(8.4 + rng.gauss(0, 0.7), 3),
                "inst_mag": round(-11.5 + rng.gauss(0, 0.02), 3),
                "snr": round(600 + rng.gauss(0, 20), 1),
            }
            stamp = when.timestamp()
            rows.append((
                f"MyWorks/{target}_sub/Light_{night:02d}_{n:05d}.fit".encode(), 4_152_960,
                int(stamp * 1e9), state, "exit code 3" if state == "failed" else None,
                json.dumps(header), 1, 0 if state == "done" else 3, stamp, stamp, 1.2,
                json.dumps(result) if state == "done" else None,
            ))  # fmt: skip
    db = sqlite3.connect(path)
    db.executemany(
        "INSERT INTO frames (relpath, size, mtime_ns, state, reason, header, attempts, exit_code,"
        " created_at, updated_at, duration, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.execute("INSERT INTO meta VALUES ('baseline_at', '0')")
    db.commit()
    db.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed_gets(port: int, path: str, count: int) -> list[float]:
    times = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(count):
        started = time.perf_counter()
        connection.request("GET", path)
        answer = connection.getresponse()
        answer.read()
        times.append(time.perf_counter() - started)
        connection.close()  # the server speaks HTTP/1.0: one request per connection
    return times


def line(what: str, times: list[float], target: str) -> None:
    median, p95 = sorted(times)[len(times) // 2], percentile(times, 0.95)
    print(
        f"| {what} | {median * 1000:.1f} ms | p95 {p95 * 1000:.1f} ms, n={len(times)} | {target} |"
    )


def api(config: Path, ledger: Path) -> int:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "seestar_watch", "dashboard", "-c", str(config),
         "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert server.stdout is not None
    server.stdout.readline()  # serving
    status = json.loads(_get(port, "/api/status"))
    with Ledger.reading(ledger) as reader:
        last = History(reader).last_change() or 0.0
    timed_gets(port, "/api/status", 5)  # warm the page cache
    line("`/api/status`", timed_gets(port, "/api/status", 200), "p95 <= 50 ms")
    line(
        "`/api/frames?since=` a minute ago (the page's poll)",
        timed_gets(port, f"/api/frames?since={last - 60!r}", 200),
        "p95 <= 50 ms",
    )
    line(
        "`/api/frames?since=` the night's start (first page, 2,000 frames)",
        timed_gets(port, f"/api/frames?since={status['night_start']!r}", 50),
        "",
    )
    return port


def first_load(port: int, runs: int = 10) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        print("first load: skipped (apt-get install chromium chromium-driver)")
        return
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)  # fmt: skip
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    times, frames = [], 0
    try:
        for _ in range(runs + 1):
            driver.get(f"http://127.0.0.1:{port}/")
            deadline = time.monotonic() + 30
            while not driver.execute_script("return document.body.dataset.loadedMs"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the page did not finish loading in 30 s")
                time.sleep(0.01)
            times.append(
                float(driver.execute_script("return document.body.dataset.loadedMs")) / 1000
            )
            frames = driver.execute_script(
                "return [...document.querySelectorAll('path.points')]"
                ".reduce((n, path) => n + Number(path.dataset.points), 0)"
            )
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    line(
        f"page's first load, navigation to the night drawn ({frames:,} chart points)",
        times[1:],
        "<= 1 s",
    )


def idle(root: Path, ledger: Path, minutes: float) -> None:
    daemons = {}
    for name, listen in (("on", f"127.0.0.1:{free_port()}"), ("off", False)):
        folder = root / name
        (folder / "state").mkdir(parents=True)
        (folder / "MyWorks").mkdir()
        shutil.copy(ledger, folder / "state" / "ledger.sqlite3")
        daemons[name] = Daemon(
            folder,
            {
                "image_watcher": {"watch_path": str(folder / "MyWorks"), "observer": "native"},
                "pipeline": {"command": ["true"]},
                "dashboard": {"listen": listen},
            },
        )
    for daemon in daemons.values():
        daemon.wait_for("watcher.started")
    time.sleep(5)  # start-up is not idle
    before = {name: d.cpu_seconds() for name, d in daemons.items()}
    started = time.monotonic()
    time.sleep(minutes * 60)
    elapsed = (time.monotonic() - started) / 60
    cost = {name: (d.cpu_seconds() - before[name]) / elapsed for name, d in daemons.items()}
    for daemon in daemons.values():
        daemon.stop()
    print(
        f"| CPU the dashboard adds to an idle daemon, no browser | {cost['on'] - cost['off']:.3f}"
        f" CPU s/min | with it {cost['on']:.3f}, without {cost['off']:.3f}, side by side over"
        f" {minutes:g} min | <= 0.05 |"
    )


def _get(port: int, path: str) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path)
    body = connection.getresponse().read()
    connection.close()
    return body


def main() -> None:
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    root = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    try:
        ledger = root / "ledger.sqlite3"
        started = time.monotonic()
        build_ledger(ledger)
        with Ledger.reading(ledger) as reader:
            rows = sum(History(reader).counts().values())
        print(f"ledger: {rows:,} rows, built in {time.monotonic() - started:.0f} s")
        config = root / "config.yaml"
        config.write_text(yaml.safe_dump({
            "image_watcher": {"watch_path": str(root / "MyWorks")},
            "pipeline": {"command": ["true"]},
            "state": {"path": str(ledger)},
        }))  # fmt: skip
        port = api(config, ledger)
        first_load(port)
        idle(root, ledger, minutes)
    finally:
        subprocess.run(["pkill", "-f", f"seestar_watch dashboard -c {root}"], check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
