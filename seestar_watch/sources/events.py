"""Changes to a local folder, heard through watchdog (the only module that imports it):
native events (inotify, FSEvents) on local disks. On network and FUSE filesystems, where
native events never report what another machine writes, sources/poller.py polls.
"""

from __future__ import annotations

import os
from collections.abc import Callable

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

from seestar_watch.log import get_logger

log = get_logger("seestar_watch.sources.events")

WATCHED_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent]


def start_observer(root: str, on_path: Callable[[str], None], *, recursive: bool) -> BaseObserver:
    """A started observer of native events calling `on_path` for every file event (polling
    is sources/poller.py's). Raises OSError (e.g. the inotify watch limit, a vanished folder)."""
    observer: BaseObserver = Observer()
    observer.schedule(_Dispatch(on_path), root, recursive=recursive, event_filter=WATCHED_EVENTS)
    observer.start()
    return observer


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
