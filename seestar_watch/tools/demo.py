"""`seestar-watch demo`: the whole product working, with no telescope and no config.

It makes a temporary "share" (MyWorks/<target>_sub), starts the real daemon on it
(watcher, ledger, archive, and the quicklook stage as the pipeline), and plays a
telescope: Seestar-like frames every second, their data arriving in chunks, one
through a temporary name and a rename, a jpg twin and a thumbnail beside each,
and one broken file. Each frame's outcome is printed as it happens, then a table.

Then, where astrometry.net and a Tycho-2 index are installed, the photometry stage: frames
of real sky (the index's own stars around M 94, one of them made a pretend variable), with
no WCS, run through `process` with `photometry` as the pipeline (solved offline, measured
on the VT scale), and the AAVSO report of them. Where they are not, one line says how to
install them.
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
FIELD = (192.78, 41.12)  # degrees: around M 94, where Tycho-2 has a few dozen stars
VARIABLE = "DEMO VAR"  # the pretend variable's name in the report
STEP = 0.15  # magnitudes it fades from one frame to the next
INSTALL = (
    "demo: the photometry stage solves frames offline; to see it too, install a solver and"
    " its index: sudo apt install astrometry.net astrometry-data-tycho2-09-littleendian"
)
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
        self.photometry_csv = root / "photometry.csv"
        self.config = root / "config.yaml"
        self.photometry_config = root / "photometry.yaml"
        self.outcomes: dict[str, str] = {}
        self._started = threading.Event()
        self._t0 = time.monotonic()
        self._lock = threading.Lock()

    def write_config(self) -> None:
        self.share.mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = {
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
        self.settings = settings

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
        measured = self._photometry()
        self._kept()
        return 0 if self._as_expected(names) and measured else 1

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
        rows = _rows_by_file(self.csv)
        self.say("")
        self.say(f"{'frame':<50} {'state':<9} {'stars':>5} {'FWHM':>7} {'mag':>8} {'SNR':>6}")
        for name in names:
            row = rows.get(name, {})
            self.say(
                f"{name:<50} {self.outcomes.get(name, 'missing'):<9} {row.get('stars', ''):>5}"
                f" {_num(row.get('fwhm_arcsec'), '.1f', ARCSEC):>7}"
                f" {_num(row.get('inst_mag'), '.3f'):>8} {_num(row.get('snr'), '.0f'):>6}"
            )

    def _kept(self) -> None:
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

    # -- the photometry stage, where a solver is installed ------------------------------

    def _photometry(self) -> bool:
        """Frames of real sky through the photometry stage, then their AAVSO report; True
        when every magnitude came back within its error (or there is no solver to show)."""
        from seestar_watch.photometry import catalogue

        try:
            if shutil.which("solve-field") is None:
                raise catalogue.CatalogueError("no solve-field")
            sky = catalogue.index_stars(*FIELD, 0.8).stars
        except catalogue.CatalogueError:
            self.say(f"\n{INSTALL}")
            return True
        near = [s for s in sky if catalogue.separation(s.ra, s.dec, *FIELD) < 0.25]
        variable = min((s for s in near if 9.5 < s.mag < 11), key=lambda s: s.mag, default=None)
        if variable is None:
            self.say(f"\ndemo: no star to measure in this index around {FIELD}: skipped")
            return True
        truths = self._write_sky_frames(sky, variable)
        self._write_photometry_config(variable)
        self.say(f"\ndemo: the photometry stage, on {len(truths)} frames of real sky (Tycho-2's")
        self.say(
            f"      stars around M 94, no WCS: solved offline); {VARIABLE} fades {STEP} a frame"
        )
        done = self._cli("process", *map(str, truths), "-c", str(self.photometry_config))
        for line in done.stdout.splitlines():  # "done<TAB>path", a line a frame
            state, _, path = line.partition("\t")
            self.say(f"      {state:<9} {os.path.basename(path)}")
        return self._photometry_table(truths) and self._aavso_report()

    def _write_sky_frames(self, sky: tuple[Any, ...], variable: Any) -> dict[Path, float]:
        from seestar_watch.tools.synthetic import Field, SkyStar, field_frame

        folder = self.share / "M 94_sub"
        folder.mkdir(parents=True, exist_ok=True)
        start = datetime.now(UTC).replace(microsecond=0)
        truths = {}
        for i in range(3):
            mag = variable.mag + STEP * i
            stars = [SkyStar(s.ra, s.dec, mag if s is variable else s.mag) for s in sky]
            when = start + timedelta(seconds=12 * i)
            path = folder / f"Light_M 94_10.0s_IRCUT_{when:%Y%m%d-%H%M%S}.fit"
            field = Field(*FIELD, tuple(stars), with_wcs=False, seed=i)
            path.write_bytes(field_frame(field, when, target="M 94"))
            truths[path] = mag
        return truths

    def _write_photometry_config(self, variable: Any) -> None:
        command = [sys.executable, "-m", "seestar_watch", "photometry", "{path}"]
        settings = {
            **self.settings,
            "pipeline": {**self.settings["pipeline"], "command": [
                *command, "--csv", str(self.photometry_csv)]},
            "logging": {"format": "lines", "level": "warning"},
            "photometry": {
                "targets": [{"name": VARIABLE, "ra": variable.ra, "dec": variable.dec}],
                "target": VARIABLE,
                "obscode": "DEMO",
            },
        }  # fmt: skip
        self.photometry_config.write_text(yaml.safe_dump(settings))

    def _photometry_table(self, truths: dict[Path, float]) -> bool:
        rows = _rows_by_file(self.photometry_csv)
        self.say("")
        self.say(f"{'frame':<42} {'true':>6} {'TG':>7} {'+-':>6} {'comps':>5} {'solved in':>9}")
        right = True
        for path, truth in truths.items():
            row = rows.get(path.name, {})
            mag, err = _float(row.get("mag")), _float(row.get("mag_err"))
            right &= mag is not None and err is not None and abs(mag - truth) <= 4 * err + 0.02
            solved = f"{row['solve_s']} s" if row.get("solve_s") else row.get("reason", "-")
            self.say(
                f"{path.name:<42} {truth:6.3f} {_num(row.get('mag'), '.3f'):>7}"
                f" {_num(row.get('mag_err'), '.3f'):>6} {row.get('comps', ''):>5} {solved:>9}"
            )
        return right

    def _aavso_report(self) -> bool:
        done = self._cli("export", "--aavso", "-c", str(self.photometry_config))
        self.say("\nand the AAVSO report of them (seestar-watch export --aavso):")
        for line in done.stdout.splitlines() + done.stderr.splitlines():
            self.say(f"  {line}")
        return done.returncode == 0

    @staticmethod
    def _cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "seestar_watch", *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            stdin=subprocess.DEVNULL,
        )


def _rows_by_file(path: Path) -> dict[str, dict[str, str]]:
    """A stage's --csv table, row by frame file name (none yet: empty)."""
    if not path.exists():
        return {}
    with path.open() as table:
        return {row["file"]: row for row in csv.DictReader(table)}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


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
