"""Shared test helpers: FITS frames built from real Seestar headers, and waiting on conditions."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"
REAL_HEADERS = ["s50_fw427_m94.hdr", "s50_fw470_eq_ngc7023.hdr", "s50_fw276_wcs_ngc7023.hdr"]
SEESTAR_FRAME_BYTES = 4_152_960
BLOCK = 2880


def real_header(name: str = REAL_HEADERS[0]) -> bytes:
    return (DATA / name).read_bytes()


def set_card(header: bytes, keyword: str, value: str) -> bytes:
    """Replace the value field of `keyword` in fixed format (no astropy: tests check it)."""
    for offset in range(0, len(header), 80):
        if header[offset : offset + 8].rstrip().decode() == keyword:
            card = f"{keyword:<8}= {value:>20}".encode()[:80].ljust(80)
            return header[:offset] + card + header[offset + 80 :]
    raise KeyError(keyword)


def small_header(width: int = 16, height: int = 8) -> bytes:
    """A real Seestar header resized to a tiny image: 2 header blocks + 1 data block."""
    header = set_card(real_header(), "NAXIS1", str(width))
    return set_card(header, "NAXIS2", str(height))


def frame_bytes(header: bytes | None = None) -> bytes:
    """A whole frame: the header, then the zero data it promises (padded to a block)."""
    header = real_header() if header is None else header
    width = int(_card_value(header, "NAXIS1"))
    height = int(_card_value(header, "NAXIS2"))
    data = width * height * 2
    return header + bytes(-(-data // BLOCK) * BLOCK)


def _card_value(header: bytes, keyword: str) -> str:
    for offset in range(0, len(header), 80):
        if header[offset : offset + 8].rstrip().decode() == keyword:
            return header[offset + 10 : offset + 30].decode().strip()
    raise KeyError(keyword)


def write_frame(path: Path, content: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(frame_bytes(small_header()) if content is None else content)
    return path


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `predicate` until it is truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


class Recorder:
    """A callback that records every event it receives, thread-safely."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)
            self.times.append(time.monotonic())

    @property
    def paths(self) -> list[str]:
        with self._lock:
            return [e["path"] for e in self.events]


@pytest.fixture
def daemons() -> Iterator[list[Any]]:
    """Daemons a test started (tests/harness.py), killed if still running at its end."""
    started: list[Any] = []
    yield started
    for daemon in started:
        daemon.close()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class _Capture(logging.Handler):
    """seestar_watch's log records as dicts: the event, its level and its context."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.entries: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        context = {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}
        if record.exc_info:
            context["exc_info"] = True  # a traceback went with it
        event = getattr(record.msg, "name", record.getMessage())  # the bare event name
        self.entries.append({"event": event, "log_level": record.levelname.lower(), **context})


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """What the library logged through the standard `logging` module (loggers seestar_watch.*)."""
    logger = logging.getLogger("seestar_watch")
    capture, level = _Capture(), logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    try:
        yield capture.entries
    finally:
        logger.removeHandler(capture)
        logger.setLevel(level)


def events_named(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry.get("event") == name]


def in_background(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """Mount a real tmpfs (root only): tmpfs(name, "size=2m") -> its folder; skipped elsewhere."""
    import os
    import subprocess

    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        folder = tmp_path / name
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def read_only_folder(tmpfs: Callable[[str, str], Path]) -> Path:
    """A folder on a real read-only filesystem (a tmpfs mounted ro): root only."""
    return tmpfs("read-only", "ro,size=1m")


def pytest_itemcollected(item: pytest.Item) -> None:
    """Tests on the machine's one SMB test bed (port 445) all run in one worker of
    pytest-xdist, one after the other; the rest are shared out among the workers."""
    if "samba" in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.xdist_group("samba"))


@pytest.fixture(scope="session")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The machine's one SMB test bed (tests/smbshare.py), for every module that needs it."""
    from tests.smbshare import SambaShare, why_unavailable

    reason = why_unavailable()
    if reason:
        pytest.skip(reason)
    share = SambaShare(tmp_path_factory.mktemp("smb"))
    share.up()
    yield share
    share.down()
