"""`seestar-watch demo`: the whole product working, with no telescope and no config.

It makes a temporary "share" (MyWorks/<target>_sub), starts the real daemon on it
(watcher, ledger, archive, and the quicklook stage as the pipeline), and plays a
telescope: Seestar-like frames every second, their data arriving in chunks, one
through a temporary name and a rename, a jpg twin and a thumbnail beside each,
and one broken file. Each frame's outcome is printed as it happens, then a table.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import yaml

from seestar_watch.tools.synthetic import Sky, frame_bytes, header, star_field

TARGET = "M 42"
ARCSEC = '"'
CADENCE = 1.0  # seconds between frames (a real S50 takes ~12 s with 10 s exposures)
Say = Callable[[str], None]


class Demo:
    def __init__(self, root: Path, frames: int, say: Say, *, kept: bool) -> None:
        self.root = root
        self.kept = kept
        self.frames = frames
        self.say = say
        self.share = root / "share" / "MyWorks"
        self.csv = root / "quicklook.csv"
        self.config = root / "config.yaml"
        self.outcomes: dict[str, str] = {}
        self._started = threading.Event()
        self._t0 = time.monotonic()
        self._lock = threading.Lock()

    def write_config(self) -> None:
        self.share.mkdir(parents=True, exist_ok=True)
        settings = {
            "image_watcher": {
                "watch_path": str(self.share),
                "recursive": True,
                "debounce_delay": 0.5,
                "rescan_interval": 5,
            },
            "pipeline": {
                "command": [
                    sys.executable,
                    "-m",
                    "seestar_watch",
                    "quicklook",
                    "{path}",
                    "--csv",
                    str(self.csv),
                ],
                "timeout": 60,
                "retries": 0,
            },
            "archive": {"path": str(self.root / "archive")},
            "state": {"path": str(self.root / "state" / "ledger.sqlite3")},
            "logging": {"format": "json", "level": "info"},
            # a short run: the page is for afterwards (`seestar-watch dashboard`), and a
            # daemon of yours may hold the default port
            "dashboard": {"listen": False},
        }
        self.config.write_text(yaml.safe_dump(settings))

    def run(self) -> int:
        self.write_config()
        self.say(f"demo: a pretend Seestar share in {self.share}")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "seestar_watch", "run", "-c", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert daemon.stdout is not None
        reader = threading.Thread(target=self._follow, args=(daemon.stdout,), daemon=True)
        reader.start()
        try:
            if not self._started.wait(30):
                self.say("demo: the daemon did not start")
                return 1
            names = self._play_telescope()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not set(names) <= set(self.outcomes):
                time.sleep(0.1)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
            reader.join(5)
        self._table(names)
        return 0 if self._as_expected(names) else 1

    # -- the telescope -----------------------------------------------------------

    def _play_telescope(self) -> list[str]:
        folder = self.share / f"{TARGET}_sub"
        folder.mkdir(exist_ok=True)
        start = datetime.now(UTC).replace(microsecond=0)
        names = []
        for i in range(self.frames):
            when = start + timedelta(seconds=12 * i)
            name = f"Light_{TARGET}_10.0s_IRCUT_{when:%Y%m%d-%H%M%S}.fit"
            sky = Sky(stars=star_field(40, seed=1, fwhm=3.5 + 0.3 * i), seed=i)
            data = frame_bytes(sky, header(TARGET, 10.0, when))
            via_temp = i == 1
            self._write_like_a_scope(folder / name, data, via_temp=via_temp)
            names.append(name)
            how = " (via a .tmp name, renamed)" if via_temp else ""
            self.say(f"{self._clock()}  scope     wrote {name}{how} + .jpg, _thn.jpg twins")
            time.sleep(CADENCE)
        broken = f"Light_{TARGET}_10.0s_IRCUT_{start:%Y%m%d-%H%M%S}_broken.fit"
        (folder / broken).write_bytes(b"this is not a FITS file\n" * 100)
        self.say(f"{self._clock()}  scope     wrote {broken} (broken on purpose)")
        return [*names, broken]

    @staticmethod
    def _write_like_a_scope(path: Path, data: bytes, via_temp: bool) -> None:
        target = path.with_name(path.name + ".tmp") if via_temp else path
        step = -(-len(data) // 4)
        with target.open("wb") as out:
            for chunk in range(4):  # the data grows in chunks, as over a slow link
                out.write(data[chunk * step : (chunk + 1) * step])
                out.flush()
                time.sleep(0.05)
        if via_temp:
            target.rename(path)
        stem = path.with_suffix("")
        path.with_name(f"{stem.name}.jpg").write_bytes(b"\xff\xd8\xff preview")
        path.with_name(f"{stem.name}_thn.jpg").write_bytes(b"\xff\xd8\xff thumbnail")

    # -- what the daemon says ------------------------------------------------------

    def _follow(self, stream: IO[bytes]) -> None:
        for raw in stream:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            self._show(entry)

    def _show(self, entry: dict[str, Any]) -> None:
        event = entry.get("event")
        frame = os.path.basename(str(entry.get("frame", entry.get("path", ""))))
        if event == "watch.subfolders_not_watched":
            self.say(f"{self._clock()}  warning   {entry.get('fix')}")
        elif event == "watcher.started":
            self.say(f"{self._clock()}  daemon    watching ({entry.get('observer')} events)")
            self._started.set()
        elif event == "frame.settled":
            self.say(f"{self._clock()}  settled   {frame}")
        elif event == "pipeline.output" and entry.get("stream") == "stdout":
            self.say(f"{self._clock()}  measured  {entry.get('line')}")
        elif event == "pipeline.finished":
            state = "done" if entry.get("exit_code") == 0 else "failed"
            self._record(frame, state)
            self.say(f"{self._clock()}  {state:<9} {frame} ({entry.get('duration_s')} s)")
        elif event == "frame.rejected":
            self._record(frame, "rejected")
            self.say(f"{self._clock()}  rejected  {frame}: {entry.get('reason')}")

    def _record(self, frame: str, state: str) -> None:
        with self._lock:
            self.outcomes[frame] = state

    def _clock(self) -> str:
        return f"{time.monotonic() - self._t0:5.1f}s"

    # -- the end ---------------------------------------------------------------------

    def _table(self, names: list[str]) -> None:
        rows = {}
        if self.csv.exists():
            with self.csv.open() as table:
                rows = {row["file"]: row for row in csv.DictReader(table)}
        self.say("")
        self.say(f"{'frame':<50} {'state':<9} {'stars':>5} {'FWHM':>7} {'mag':>8} {'SNR':>6}")
        for name in names:
            row = rows.get(name, {})
            self.say(
                f"{name:<50} {self.outcomes.get(name, 'missing'):<9} {row.get('stars', ''):>5}"
                f" {_num(row.get('fwhm_arcsec'), '.1f', ARCSEC):>7}"
                f" {_num(row.get('inst_mag'), '.3f'):>8} {_num(row.get('snr'), '.0f'):>6}"
            )
        if self.kept:
            self.say(f"\nconfig, ledger, archive and {self.csv.name} are kept in {self.root}")
            config = shlex.quote(str(self.config))
            self.say(f"see the night on a page: seestar-watch dashboard -c {config}")
        else:
            self.say("\n(all of it is removed now: --keep DIR keeps it)")

    def _as_expected(self, names: list[str]) -> bool:
        *frames, broken = names
        return all(self.outcomes.get(n) == "done" for n in frames) and (
            self.outcomes.get(broken) == "rejected"
        )


def _num(value: str | None, fmt: str, unit: str = "") -> str:
    return f"{float(value):{fmt}}{unit}" if value else "-"


def run_demo(frames: int, keep: Path | None, say: Say) -> int:
    root = keep if keep is not None else Path(tempfile.mkdtemp(prefix="seestar-watch-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        return Demo(root, frames, say, kept=keep is not None).run()
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
