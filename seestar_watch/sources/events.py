"""Changes to a local folder, heard through watchdog (the only module that imports it).

Native events (inotify, FSEvents) on local disks; polling on network and FUSE
filesystems, where native events never report what another machine writes.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator

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

from seestar_watch.log import get_logger
from seestar_watch.sources import is_fits_name

log = get_logger("seestar_watch.sources.events")

WATCHED_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent]
MAX_REMEMBERED = 100_000  # stats remembered by QuietFileStat; ~10 nights of frames


def start_observer(
    root: str,
    kind: str,
    on_path: Callable[[str], None],
    *,
    recursive: bool,
    poll_interval: float,
) -> BaseObserver:
    """A started observer ("native" or "polling") calling `on_path` for every file event.
    Raises OSError (e.g. the inotify watch limit, a vanished folder)."""
    if kind == "polling":
        observer: BaseObserver = PollingObserverVFS(
            QuietFileStat(), fits_and_folders, polling_interval=poll_interval
        )
    else:
        observer = Observer()
    observer.schedule(_Dispatch(on_path), root, recursive=recursive, event_filter=WATCHED_EVENTS)
    observer.start()
    return observer


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


class _Dispatch(FileSystemEventHandler):
    """Hands events over and never raises: an exception would kill watchdog's dispatcher."""

    def __init__(self, on_path: Callable[[str], None]) -> None:
        self._on_path = on_path

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        try:
            # a move (temp -> final) reports both: the old name is then found gone
            self._on_path(os.fsdecode(event.src_path))
            if isinstance(event, FileMovedEvent):
                self._on_path(os.fsdecode(event.dest_path))
        except Exception:
            log.exception("watcher.event_failed", event_type=type(event).__name__)
