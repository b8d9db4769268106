"""ImageWatcher: calls back once for every FITS frame that has finished arriving.

The public class for scripts, and a small adapter: a local source (watchdog events,
or polling on network and FUSE mounts) plus settle (quiet, FITS-complete, once per
version) plus your callback. The daemon uses the same two parts with its ledger.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from seestar_watch.config import SMB_SCHEME, ObserverKind, parse_smb_url
from seestar_watch.fitsheader import HeaderRead, Status
from seestar_watch.log import get_logger
from seestar_watch.settle import GaveUp, Settle
from seestar_watch.sources import Source, Version, source_at

log = get_logger("seestar_watch.watcher")

JOIN_TIMEOUT = 10.0

Event = dict[str, Any]


class ImageWatcher:
    """Watch `watch_path` (a folder, or an smb:// URL) and call `callback(event)` once
    per FITS file, once it has been quiet for `debounce_delay` seconds.

    The event is a dict: `path` (absolute, or the frame's smb:// URL), `header` (flat
    primary header, or {} when unreadable), `size_kb`, `complete` (whether the header
    says all its data is there) and `reason` (why not, else None). With
    `wait_for_complete=True` (the default) a quiet file whose header says data is still
    missing (a frame arriving over SMB in pauses) is waited for until it is complete, and
    called back with `complete: False` after `incomplete_timeout` if it never is (a
    cut-off copy); with False it is called back after the quiet period, whatever it holds.
    Callbacks run one at a time on the watcher's own thread: hand long work off to a queue
    of your own.
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
        wait_for_complete: bool = True,
    ) -> None:
        smb = str(watch_path).lower().startswith(SMB_SCHEME)  # no mount: the share itself
        self.source: Source = source_at(
            parse_smb_url(str(watch_path)) if smb else watch_path,
            recursive=recursive,
            ignore=tuple(ignore),
            observer=observer,
            poll_interval=poll_interval,
        )
        self.watch_path = self.source.location
        self.callback = callback
        self.debounce_delay = debounce_delay
        self.recursive = recursive
        self.observer_kind = observer
        self.poll_interval = poll_interval
        self.incomplete_timeout = incomplete_timeout
        self._settle = Settle(
            self.source,
            debounce_delay,
            incomplete_timeout=incomplete_timeout,
            on_settled=self._settled,
            on_gave_up=self._gave_up,
            wait_for_complete=wait_for_complete,
        )
        self._lock = threading.Lock()
        self._started = self._stopped = False

    @property
    def observer_used(self) -> str | None:
        """ "native" or "polling" once started."""
        return self.source.observer_used

    @property
    def is_running(self) -> bool:
        return self._started and not self._stopped

    def start(self) -> bool:
        """Start watching; logs an ERROR and returns False when that is not possible."""
        with self._lock:
            if self._stopped or self._started:
                return self.is_running
            if not self.source.watch(self._settle.touch):
                return False
            self._settle.start()
            self._started = True
        return True

    def stop(self, timeout: float | None = JOIN_TIMEOUT) -> None:
        """Cancel pending paths and stop the threads; safe to call twice or before start()."""
        with self._lock:
            self._stopped = True
        self._settle.stop(timeout)
        self.source.unwatch(JOIN_TIMEOUT if timeout is None else timeout)

    def notice(self, path: str) -> None:
        """Treat `path` as if an event had reported it (used after your own scan)."""
        relpath = self.source.relpath_of(path)
        if relpath is not None and self.source.wanted(relpath.rpartition(os.sep)[2]):
            self._settle.touch(relpath)

    def _settled(self, entry: Version, header: HeaderRead) -> None:
        path = self.source.path_of(entry.relpath)
        if header.status is Status.INVALID:
            log.warning("frame.header_unreadable", path=path, reason=header.reason)
        complete = header.status is Status.COMPLETE
        self._call_back(path, header.cards, header.size, complete, header.reason or None)

    def _gave_up(self, gave_up: GaveUp) -> None:
        path = self.source.path_of(gave_up.relpath)
        log.warning(
            "frame.incomplete", path=path, reason=gave_up.reason, waited_s=round(gave_up.waited, 1)
        )
        if gave_up.entry is not None:  # a file that stayed cut off: called back, incomplete
            self._call_back(path, {}, gave_up.entry.size, False, gave_up.reason)

    def _call_back(
        self, path: str, header: dict[str, Any], size: int, complete: bool, reason: str | None
    ) -> None:
        event = {
            "path": path,
            "header": header,
            "size_kb": size / 1024,
            "complete": complete,
            "reason": reason,
        }
        try:
            self.callback(event)
        except Exception:
            log.exception("watcher.callback_failed", path=path)
