"""ImageWatcher: calls back once for every FITS frame that has finished arriving.

watchdog (the only module that imports it) reports that something happened to a
path; the Settler waits until the path has been quiet for `debounce_delay`
seconds; the FITS header then says whether all the data has arrived. Only then
does the callback run, once per version of the file.

On network and FUSE filesystems native events never report what the telescope
writes, so `observer="auto"` polls there (research/watchdog.md, watchdog #409).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import structlog
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from seestar_watch.config import ObserverKind
from seestar_watch.errors import SHARE_ERRNOS
from seestar_watch.fitsheader import HeaderRead, Status, read_header
from seestar_watch.mounts import choose_observer, read_mount_table
from seestar_watch.scan import frame_filter, is_fits_name
from seestar_watch.settle import Settler

log = structlog.get_logger("seestar_watch.watcher")

WATCHED_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent]
MAX_REMEMBERED = 100_000  # versions remembered to avoid firing twice; ~10 nights of frames
JOIN_TIMEOUT = 10.0

Event = dict[str, Any]


def fits_and_folders(path: str | None) -> Iterator[os.DirEntry[str]]:
    """A listdir for polling that skips jpg twins and thumbnails (a third of the stats)."""
    with os.scandir(path) as entries:
        kept = [e for e in entries if e.is_dir(follow_symlinks=False) or is_fits_name(e.name)]
    return iter(kept)


class QuietFileStat:
    """lstat for the polling observer that spares files which stopped changing long ago.

    Polling a share of 2,000 frames every 2 s means 1,000 stats a second over the
    network, nearly all of frames finished hours ago. A file unchanged for
    `settled_after` seconds gets its remembered stat back, and a real one again
    every `refresh_every` seconds (folders always get a real one), so a change to an
    old file is still seen, a little later; the daemon's rescans see it too. New and
    growing files are always stat'ed for real.
    """

    def __init__(
        self,
        settled_after: float = 30.0,
        refresh_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settled_after = settled_after
        self.refresh_every = refresh_every
        self._clock = clock
        # path -> (last real stat, unchanged since, when that stat was taken)
        self._known: dict[str, tuple[os.stat_result, float, float]] = {}

    def __call__(self, path: str) -> os.stat_result:
        now = self._clock()
        known = self._known.get(path)
        if known is not None:
            result, unchanged_since, checked = known
            if now - unchanged_since >= self.settled_after and now - checked < self.refresh_every:
                return result
        result = os.lstat(path)  # an OSError goes to watchdog, which skips the path
        if stat.S_ISDIR(result.st_mode):
            return result
        same = known is not None and _signature(known[0]) == _signature(result)
        self._known[path] = (result, known[1] if known is not None and same else now, now)
        if len(self._known) > MAX_REMEMBERED:
            del self._known[next(iter(self._known))]
        return result


def _signature(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_ino, info.st_size, info.st_mtime_ns


def _remember(memory: dict[str, Any], path: str, value: Any) -> None:
    """Set memory[path], most recent last, forgetting the oldest beyond MAX_REMEMBERED."""
    memory.pop(path, None)
    memory[path] = value
    if len(memory) > MAX_REMEMBERED:
        del memory[next(iter(memory))]


class _Dispatch(FileSystemEventHandler):
    """Hands events over and never raises: an exception would kill watchdog's dispatcher."""

    def __init__(self, on_event: Callable[[FileSystemEvent], None]) -> None:
        self._on_event = on_event

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("watcher.event_failed", event=type(event).__name__)


class ImageWatcher:
    """Watch `watch_path` and call `callback(event)` once per finished FITS frame.

    The event is a dict: `path` (absolute), `header` (flat primary header, or {}
    when unreadable) and `size_kb`. Callbacks run one at a time on the watcher's
    own thread: hand long work off to a queue of your own.
    """

    def __init__(
        self,
        watch_path: str | os.PathLike[str],
        callback: Callable[[Event], object],
        debounce_delay: float = 2.0,
        *,
        recursive: bool = False,
        observer: ObserverKind = "auto",
        poll_interval: float = 2.0,
        incomplete_timeout: float = 300.0,
        ignore: Sequence[str] = (),
    ) -> None:
        self.watch_path = os.path.abspath(os.fspath(watch_path))
        self.callback = callback
        self.debounce_delay = debounce_delay
        self.recursive = recursive
        self.observer_kind = observer
        self.poll_interval = poll_interval
        self.incomplete_timeout = incomplete_timeout
        self._wanted = frame_filter(ignore)
        self.observer_used: str | None = None  # "native" | "polling" once started
        self._settler = Settler(debounce_delay, self._on_quiet)
        self._observer: BaseObserver | None = None
        self._lock = threading.Lock()
        self._stopped = False
        # path -> ((size, mtime_ns) first seen incomplete, when): a rescan's notice() must not
        # restart the give-up clock of a frame that stays truncated all night
        self._incomplete_since: dict[str, tuple[tuple[int, int] | None, float]] = {}
        self._fired: dict[str, tuple[int, int, int, int]] = {}  # path -> identity last fired
        self._gave_up: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) given up on

    @property
    def is_running(self) -> bool:
        return self._observer is not None and not self._stopped

    def start(self) -> bool:
        """Start watching; logs an ERROR and returns False when that is not possible."""
        with self._lock:
            if self._stopped or self._observer is not None:
                return self._observer is not None and not self._stopped
            if not os.path.isdir(self.watch_path):
                what = (
                    "does not exist" if not os.path.lexists(self.watch_path) else "is not a folder"
                )
                log.error("watcher.path_unusable", path=self.watch_path, problem=what)
                return False
            kind, reason = choose_observer(
                self.observer_kind, os.path.realpath(self.watch_path), read_mount_table()
            )
            observer = self._make_observer(kind)
            try:
                observer.schedule(
                    _Dispatch(self._on_event),
                    self.watch_path,
                    recursive=self.recursive,
                    event_filter=WATCHED_EVENTS,
                )
                observer.start()
            except OSError as exc:  # e.g. inotify watch limit reached, folder vanished
                log.error("watcher.start_failed", path=self.watch_path, error=str(exc))
                return False
            self._settler.start()
            self._observer, self.observer_used = observer, kind
        log.info(
            "watcher.started",
            path=self.watch_path,
            observer=kind,
            reason=reason,
            recursive=self.recursive,
        )
        return True

    def stop(self, timeout: float | None = JOIN_TIMEOUT) -> None:
        """Cancel pending paths and stop the threads; safe to call twice or before start()."""
        with self._lock:
            self._stopped = True
            observer, self._observer = self._observer, None
        self._settler.stop(timeout)
        if observer is not None:
            observer.stop()
            # join() has no timeout of its own worth trusting on a hung share
            observer.join(timeout)

    def _make_observer(self, kind: str) -> BaseObserver:
        if kind == "polling":
            return PollingObserverVFS(
                QuietFileStat(), fits_and_folders, polling_interval=self.poll_interval
            )
        return Observer()

    def _on_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            # temp -> final: only the final path may fire
            self._settler.forget(os.fsdecode(event.src_path))
            self._touch(os.fsdecode(event.dest_path))
        else:
            self._touch(os.fsdecode(event.src_path))

    def notice(self, path: str) -> None:
        """Treat `path` as if an event had reported it (used by scans)."""
        self._touch(os.path.abspath(path))

    def _touch(self, path: str) -> None:
        if self._wanted(os.path.basename(path)) and self._settler.touch(path):
            log.debug("frame.detected", path=path)

    def _on_quiet(self, path: str) -> float | None:
        """The path has been quiet: fire, wait again (None = done with it)."""
        try:
            info = os.lstat(path)
        except OSError as exc:
            if exc.errno in SHARE_ERRNOS:
                return self._retry(path, None, Status.UNAVAILABLE, "share unavailable")
            self._incomplete_since.pop(path, None)
            return None
        if not stat.S_ISREG(info.st_mode):
            self._incomplete_since.pop(path, None)
            return None  # FIFOs, symlinks, devices, folders: never opened, never reported
        header = read_header(path)
        if header.status in (Status.INCOMPLETE, Status.UNAVAILABLE):
            version = (info.st_size, info.st_mtime_ns)
            return self._retry(path, version, header.status, header.reason)
        self._incomplete_since.pop(path, None)
        if header.status is not Status.GONE:
            self._settled_once(path, header)
        return None

    def _retry(
        self, path: str, version: tuple[int, int] | None, status: Status, reason: str
    ) -> float | None:
        """Look again later, or give up once this version has been incomplete for too long.

        The clock starts the first time *this version* (size, mtime) is seen incomplete and
        restarts only when the file changes: a frame that grows is being written, a frame
        that stays cut off at 8 KB is given up on after incomplete_timeout however many
        events or rescans notice it meanwhile. An unavailable share (no version known)
        keeps the clock of whatever version was seen last.
        """
        if version is not None and self._gave_up.get(path) == version:
            return None  # reported once already; a new version starts afresh
        now = time.monotonic()
        seen, since = self._incomplete_since.get(path, (version, now))
        if version is not None and seen is not None and seen != version:
            since = now  # it changed: still arriving
        self._incomplete_since[path] = (version if version is not None else seen, since)
        if now - since < self.incomplete_timeout:
            return max(self.debounce_delay, 0.1)
        self._incomplete_since.pop(path, None)
        if seen is not None:
            _remember(self._gave_up, path, seen)
        self.on_gave_up(path, status, reason, now - since)
        return None

    def _settled_once(self, path: str, header: HeaderRead) -> None:
        # A late polling event can arrive after a frame was already reported
        # complete and unchanged: report each version of a file only once.
        if header.identity is not None and self._fired.get(path) == header.identity:
            return
        with self._lock:
            if self._stopped:
                return
        if self.on_settled(path, header) and header.identity is not None:
            _remember(self._fired, path, header.identity)

    # -- hooks a subclass may replace (the daemon records into its ledger) ----

    def on_settled(self, path: str, header: HeaderRead) -> bool:
        """A version of `path` finished arriving (or is not FITS); True once it is handled."""
        if header.status is Status.INVALID:
            log.warning("frame.header_unreadable", path=path, reason=header.reason)
        event = {"path": path, "header": header.cards, "size_kb": header.size / 1024}
        try:
            self.callback(event)
        except Exception:
            log.exception("watcher.callback_failed", path=path)
        return True

    def on_gave_up(self, path: str, status: Status, reason: str, waited: float) -> None:
        """`path` stayed incomplete (or unreadable) for incomplete_timeout seconds."""
        log.warning("frame.incomplete", path=path, reason=reason, waited_s=round(waited, 1))
