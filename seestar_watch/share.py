"""The share's state at every moment, found without ever blocking on it.

Whether something is mounted, and where, comes from the mount table only. What
has to touch the share (a stat and a listing of watch_path) runs on a helper
thread, bounded by a timeout and single-flight: while one probe is stuck on a
dead server there is one stuck thread, never a growing pile. EIO, EHOSTDOWN,
ETIMEDOUT, ENOTCONN, ESTALE and ENODEV mean "unavailable", never "gone".

The supervisor turns those checks into transitions (up, lost, restored) for the
daemon, and keeps a flapping share from flooding the log.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

import structlog

from seestar_watch.config import WatcherConfig
from seestar_watch.errors import SHARE_ERRNOS
from seestar_watch.mounts import Mount, mount_containing, read_mount_table

log = structlog.get_logger("seestar_watch.share")

PROBE_TIMEOUT = 10.0
CHECK_WHILE_UP = 5.0  # seconds between two checks of a share that answers
FLAP_WINDOW = 60.0  # this many seconds ...
FLAP_LIMIT = 4  # ... with this many transitions is flapping: one line, not hundreds

T = TypeVar("T")


class ProbeTimeout(Exception):
    pass


class SingleFlight:
    """Runs a blocking call on a helper thread and waits for it at most `timeout` seconds.

    Callers that arrive while a call is in flight wait for *that* call instead of
    starting another, so a hung share holds one thread, not one per attempt.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._box: dict[str, Any] = {}

    def call(self, function: Callable[[], T], timeout: float) -> T:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                box: dict[str, Any] = {}
                self._box = box
                self._thread = threading.Thread(
                    target=self._run, args=(function, box), name=self._name, daemon=True
                )
                self._thread.start()
            thread, box = self._thread, self._box
        thread.join(timeout)
        if thread.is_alive():
            raise ProbeTimeout(f"no answer within {timeout:.1f} s")
        if "error" in box:
            raise box["error"]
        return box["result"]  # type: ignore[no-any-return]

    @staticmethod
    def _run(function: Callable[[], Any], box: dict[str, Any]) -> None:
        try:
            box["result"] = function()
        except BaseException as exc:  # handed to the caller, who decides
            box["error"] = exc


class Availability(Enum):
    AVAILABLE = "available"
    MISSING = "missing"  # not mounted, or watch_path does not exist
    UNAVAILABLE = "unavailable"  # mounted, but errors or no answer


@dataclass(frozen=True)
class ShareState:
    availability: Availability
    reason: str
    mount: Mount | None
    latency: float | None = None  # seconds the probe took to stat and list watch_path

    @property
    def is_available(self) -> bool:
        return self.availability is Availability.AVAILABLE


def mount_at(point: str, mounts: list[Mount]) -> Mount | None:
    """The active mount exactly at `point` (the last one: later mounts hide earlier ones)."""
    found = [m for m in mounts if os.path.normpath(m.mount_point) == os.path.normpath(point)]
    return found[-1] if found else None


def enclosing_share(point: str, mounts: list[Mount]) -> Mount | None:
    """The network or FUSE mount that `point` lies inside (not at), e.g. smbnetfs's host folder."""
    mount = mount_containing(point, mounts)
    if mount is None or not mount.is_network:
        return None
    return mount if os.path.normpath(mount.mount_point) != os.path.normpath(point) else None


def not_mounted_reason(point: str, mounts: list[Mount]) -> str:
    """Why mount_point has no mount: nothing there, or it is a folder inside another mount."""
    enclosing = enclosing_share(point, mounts)
    if enclosing is None:
        return f"nothing is mounted at {point}"
    return (
        f"nothing is mounted at {point}: it is a folder inside the {enclosing.fstype} mount at"
        f" {enclosing.mount_point}; set image_watcher.mount_point: {enclosing.mount_point}"
    )


def probe_folder(path: str) -> float:
    """stat and start listing `path`; the seconds it took. Raises OSError."""
    started = time.monotonic()
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", path)
    with os.scandir(path) as entries:
        next(entries, None)
    return time.monotonic() - started


def check_share(
    config: WatcherConfig, prober: SingleFlight, timeout: float = PROBE_TIMEOUT
) -> ShareState:
    """Is watch_path on an active mount and answering? Never blocks beyond `timeout`."""
    watch = os.path.abspath(config.watch_path)
    mounts = read_mount_table()
    if config.mount_point is not None:
        point = os.path.abspath(config.mount_point)
        mount = mount_at(point, mounts)
        if mount is None:
            return ShareState(Availability.MISSING, not_mounted_reason(point, mounts), None)
    else:
        mount = mount_containing(watch, mounts)
    try:
        latency = prober.call(lambda: probe_folder(watch), timeout)
    except ProbeTimeout as exc:
        return ShareState(Availability.UNAVAILABLE, f"{watch}: {exc}", mount)
    except OSError as exc:
        return ShareState(*_classify(watch, exc), mount)
    return ShareState(Availability.AVAILABLE, "", mount, latency)


def _classify(watch: str, exc: OSError) -> tuple[Availability, str]:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        what = "does not exist" if exc.errno == errno.ENOENT else "is not a folder"
        return Availability.MISSING, f"{watch} {what}"
    if exc.errno in SHARE_ERRNOS:
        return Availability.UNAVAILABLE, f"{watch}: {os.strerror(exc.errno or 0)}"
    return Availability.UNAVAILABLE, f"{watch}: {exc.strerror or exc}"


class ShareSupervisor:
    """Checks the share on its own thread and calls `on_up` / `on_down` on every change."""

    def __init__(
        self,
        config: WatcherConfig,
        stop: threading.Event,
        on_up: Callable[[ShareState], None],
        on_down: Callable[[ShareState], None],
    ) -> None:
        self.config = config
        self.state: ShareState | None = None
        self._stop = stop
        self._on_up = on_up
        self._on_down = on_down
        self._prober = SingleFlight("seestar-watch-probe")
        self._poke = threading.Event()
        self._ever_up = False
        self._transitions: deque[float] = deque()
        self._quiet_since: float | None = None  # set while flapping lines are held back

    @property
    def available(self) -> bool:
        return self.state is not None and self.state.is_available

    def check(self) -> ShareState:
        return check_share(self.config, self._prober)

    def poke(self) -> None:
        """Check again now (a scan or copy just failed)."""
        self._poke.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self._apply(self.check())
            wait = CHECK_WHILE_UP if self.available else self.config.mount_retry
            self._poke.clear()
            deadline = time.monotonic() + wait
            while not self._stop.is_set() and not self._poke.is_set():
                if self._stop.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
                    return
                if time.monotonic() >= deadline:
                    break

    def _apply(self, state: ShareState) -> None:
        was_up = self.available
        previous, self.state = self.state, state
        if state.is_available and not was_up:
            self._transition("share.restored" if self._ever_up else "share.ready", state)
            self._ever_up = True
            self._on_up(state)
        elif not state.is_available and was_up:
            self._transition("share.lost", state)
            self._on_down(state)
        elif not state.is_available and previous is None:
            log.warning("share.waiting", reason=state.reason, retry_every_s=self.config.mount_retry)
        self._note_if_steady()

    def _transition(self, event: str, state: ShareState) -> None:
        now = time.monotonic()
        self._transitions.append(now)
        while self._transitions and now - self._transitions[0] > FLAP_WINDOW:
            self._transitions.popleft()
        if len(self._transitions) >= FLAP_LIMIT and self._quiet_since is None:
            self._quiet_since = now
            log.warning(
                "share.flapping",
                transitions=len(self._transitions),
                window_s=FLAP_WINDOW,
                note="holding back share lines until it settles",
            )
        if self._quiet_since is None:
            log.log(
                30 if event == "share.lost" else 20,
                event,
                reason=state.reason or None,
                fstype=state.mount.fstype if state.mount else None,
            )

    def _note_if_steady(self) -> None:
        if self._quiet_since is None or not self._transitions:
            return
        if time.monotonic() - self._transitions[-1] > FLAP_WINDOW:
            self._quiet_since = None
            log.info(
                "share.steady",
                available=self.available,
                reason=self.state.reason if self.state else None,
            )
