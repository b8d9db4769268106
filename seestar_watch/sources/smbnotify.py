"""Hearing changes on an SMB share: a change notification pending on every folder.

Samba reports what is written on its own disk only for the folder a notification
request is on, not below it: so one request per folder, new target folders watched
as they appear (and listed once more a second later: the server may start watching
a new folder's disk a moment after the request). A notification answers once and is
armed again at once. When the server will not notify, or a listing shows it is
silent, the same thread lists every poll_interval instead.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import smbclient
from smbprotocol.change_notify import (
    CompletionFilter,
    FileAction,
    FileSystemWatcher,
    SMB2ChangeNotifyResponse,
)
from smbprotocol.exceptions import SMBException
from smbprotocol.header import NtStatus

from seestar_watch.log import Repeats, get_logger
from seestar_watch.sources import Entry, OnChange, Stamp
from seestar_watch.sources.smbconnection import SmbClient, first_line
from seestar_watch.sources.smbwire import Listed, malformed, parse_changes, spelled_as_listed

log = get_logger("seestar_watch.sources.smb")

# what is reported: names (new frames, new target folders, renames), sizes and times;
# Samba reports a file growing on its own disk only with ATTRIBUTES in the filter
NOTIFY_FILTER = (
    CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME
    | CompletionFilter.FILE_NOTIFY_CHANGE_DIR_NAME
    | CompletionFilter.FILE_NOTIFY_CHANGE_ATTRIBUTES
    | CompletionFilter.FILE_NOTIFY_CHANGE_SIZE
    | CompletionFilter.FILE_NOTIFY_CHANGE_LAST_WRITE
)

LOOK_AGAIN_AFTER = 1.0  # seconds after a new folder is watched, it is listed once more
GONE_ACTIONS = (FileAction.FILE_ACTION_REMOVED, FileAction.FILE_ACTION_RENAMED_OLD_NAME)


class Folders(Protocol):
    """What the notifications need of the source: its connection, names and listings."""

    client: SmbClient
    recursive: bool
    poll_interval: float
    wanted: Callable[[str], bool]
    last_listing: dict[str, Stamp] | None

    def list_frames(self) -> Iterator[Entry]: ...

    def folders(self) -> list[str]: ...

    def is_folder(self, relpath: str) -> bool: ...

    def query(self, folder: str) -> list[Listed]: ...

    def notifications_refused(self) -> None: ...

    def announce(self, relpath: str) -> None: ...

    def notifications_armed(self) -> None: ...


class _Relay(threading.Event):
    """A watcher's answer event that also wakes the one thread waiting on all of them."""

    def __init__(self, any_answer: threading.Event) -> None:
        super().__init__()
        self._any_answer = any_answer

    def set(self) -> None:
        super().set()
        self._any_answer.set()


class ChangeWatcher(FileSystemWatcher):  # type: ignore[misc]  # smbprotocol is untyped
    """smbprotocol's watcher, its answer read by sources/smbwire.py: every offset checked,
    a name that is not valid UTF-16 kept for the caller to refuse (smbprotocol's own parser
    raises on one and would walk a hostile buffer an offset of 1 at a time)."""

    def changes(self) -> list[tuple[int, str]] | None:
        """(action, name) of each change; [] when the server's buffer overflowed (list the
        folder instead); None while pending or once cancelled. Raises the server's refusal
        (an SMBException), or OSError(EPROTO) for an answer that breaks the protocol."""
        request = self._request
        if self.cancelled or request is None or request.response is None:
            return None
        if request.response["status"].get_value() == NtStatus.STATUS_PENDING:
            return None
        if self._t_exc:
            raise self._t_exc
        if self._file_actions is not None:  # STATUS_NOTIFY_ENUM_DIR: an overflow, no details
            return []
        try:
            answer = SMB2ChangeNotifyResponse()
            answer.unpack(request.response["data"].get_value())
            buffer = answer["buffer"].get_value()
        except Exception as exc:  # smbprotocol's structures on a hostile answer
            raise malformed(f"a change notification ({type(exc).__name__})") from None
        return parse_changes(buffer)


class _FolderWatch:
    """One folder's open handle and its pending change notification, armed again after
    every answer (a notification answers once)."""

    def __init__(self, client: SmbClient, relpath: str, any_answer: threading.Event) -> None:
        self.client = client
        self.relpath = relpath
        self._any_answer = any_answer
        self.handle = client.call(
            lambda: smbclient.open_file(
                client.unc(relpath),
                mode="rb",
                share_access="rwd",
                buffering=0,
                file_type="dir",
                **client.options,
            )
        )
        self.pending: ChangeWatcher | None = None
        self.arm()

    def arm(self) -> None:
        watcher = ChangeWatcher(self.handle.fd)
        watcher.response_event = _Relay(self._any_answer)
        self.client.call(lambda: watcher.start(NOTIFY_FILTER))
        self.pending = watcher

    def answered(self) -> bool:
        return self.pending is not None and self.pending.response_event.is_set()

    def close(self) -> None:
        pending, self.pending = self.pending, None
        with contextlib.suppress(Exception):  # cancelled or already gone with the connection
            if pending is not None and not pending.response_event.is_set():
                pending.cancel()
        with contextlib.suppress(OSError):
            self.client.call(self.handle.close)


class Notifications:
    """The thread that hears changes: a change notification pending on every folder
    (Samba reports what is written on its own disk only for the folder a request is on,
    not below it), or listings every poll_interval compared with the one before."""

    def __init__(self, source: Folders, on_change: OnChange, *, notify: bool) -> None:
        self.source = source
        self.on_change = on_change
        self.notify = notify
        self._stop = threading.Event()
        self._any_answer = threading.Event()
        self._look_again: dict[str, float] = {}  # new folders to list once more, and when
        self._armed: dict[str, _FolderWatch] = {}  # armed by arm_all, taken over by the thread
        self._thread = threading.Thread(target=self._run, name="seestar-watch-smb", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._any_answer.set()
        self._thread.join(timeout)

    def fall_back_to_listings(self) -> None:
        self.notify = False
        self._any_answer.set()

    def _run(self) -> None:
        failures = Repeats()
        while not self._stop.is_set():
            try:
                if self.notify:
                    self._hear_notifications()
                else:
                    self._poll_listings()
            except OSError as exc:  # the share's trouble: the supervisor sees it too
                log.debug("smb.watch_interrupted", error=str(exc))
            except Exception as exc:  # an answer nothing expected: armed again, said once
                if failures.first(exc):
                    log.exception("smb.watch_failed", error=f"{type(exc).__name__}: {exc}")
            self._stop.wait(1.0)

    def arm_all(self) -> None:
        """A notification pending on every folder; raises OSError. Done before watch()
        returns, so that a listing made after it misses nothing."""
        watches: dict[str, _FolderWatch] = {}
        try:
            for folder in ["", *self.source.folders()]:
                watches[folder] = _FolderWatch(self.source.client, folder, self._any_answer)
        except BaseException:
            for watch in watches.values():
                watch.close()
            raise
        self._armed = watches
        self.source.notifications_armed()

    def refused_at_once(self, wait: float) -> str | None:
        """Why the server refused the watched folder's notification within `wait` seconds
        (impacket and ksmbd answer at once), or None: then listings are used from the
        start, and `watcher.started` says so."""
        root = self._armed.get("")
        if root is None or root.pending is None or not root.pending.response_event.wait(wait):
            return None
        try:
            root.pending.changes()
        except SMBException as exc:
            for watch in self._armed.values():
                watch.close()
            self._armed, self.notify = {}, False
            return first_line(exc)
        return None  # a change already: taken, and the thread hears it

    def _hear_notifications(self) -> None:
        watches, self._armed = self._armed, {}
        self._look_again.clear()
        try:
            if not watches:  # armed anew after the connection broke: what did we miss?
                self.arm_all()
                watches, self._armed = self._armed, {}
                self._report_listing_changes()
            while self.notify and not self._stop.is_set():
                # asleep until an answer, a stop, the fall-back, or a new folder's second look
                due = min(self._look_again.values(), default=None)
                if self._any_answer.wait(None if due is None else max(0.0, due - time.monotonic())):
                    self._any_answer.clear()
                    for watch in list(watches.values()):
                        if watch.answered():
                            self._answer(watch, watches)
                self._look_again_at_new_folders()
        finally:
            for watch in watches.values():
                watch.close()

    def _answer(self, watch: _FolderWatch, watches: dict[str, _FolderWatch]) -> None:
        assert watch.pending is not None
        try:
            changes = watch.pending.changes()
        except SMBException as exc:  # e.g. STATUS_NOT_IMPLEMENTED (ksmbd), or a folder gone
            self._refused(watch, watches, exc)
            return
        if changes is None:  # cancelled, or the connection died: the supervisor will see
            raise OSError(errno.ENOTCONN, "the change notification was cut off")
        watch.arm()
        if not changes:  # the server's buffer overflowed: look at what changed
            self._report_listing_changes()
            return
        self._report_changes(watch, watches, changes)

    def _refused(
        self, watch: _FolderWatch, watches: dict[str, _FolderWatch], exc: SMBException
    ) -> None:
        """A folder's notification refused: a sub-folder that went is no longer watched;
        the watched folder's means the server will not notify: listings from now on."""
        if watch.relpath:
            watch.close()
            del watches[watch.relpath]
            return
        log.warning(
            "smb.notify_unsupported",
            reason=first_line(exc),
            note=f"listing every {self.source.poll_interval:g} s instead",
        )
        self.notify = False
        self.source.notifications_refused()

    def _report_changes(
        self, watch: _FolderWatch, watches: dict[str, _FolderWatch], changes: list[tuple[int, str]]
    ) -> None:
        list_folder = False
        for action, name in changes:
            if action in GONE_ACTIONS:
                continue
            if not spelled_as_listed(name):
                # a notification names one entry of its own folder as it is on the server's
                # disk, a listing as Windows may see it (Samba lists `M:42_sub` as
                # `M6LJI2~T`): the listing's spelling is the frame's, so list the folder
                list_folder = True
                continue
            relpath = f"{watch.relpath}/{name}" if watch.relpath else name
            if self.source.wanted(name):
                self.source.announce(relpath)
                self.on_change(relpath)
            elif relpath not in watches and self.source.recursive:
                self._watch_if_folder(relpath, watches)
        if list_folder:
            self._report_folder(watch.relpath, watches)

    def _watch_if_folder(self, relpath: str, watches: dict[str, _FolderWatch]) -> None:
        """A new target folder: watch it, and report what it already holds."""
        if not self.source.is_folder(relpath):
            return
        watches[relpath] = _FolderWatch(self.source.client, relpath, self._any_answer)
        # the server may start watching a new folder's disk a moment after the request:
        # what is written in that moment is found by a second look
        self._look_again[relpath] = time.monotonic() + LOOK_AGAIN_AFTER
        self._report_folder(relpath, watches)

    def _look_again_at_new_folders(self) -> None:
        now = time.monotonic()
        for relpath, when in list(self._look_again.items()):
            if now >= when:
                del self._look_again[relpath]
                self._report_folder(relpath, None)

    def _report_folder(self, relpath: str, watches: dict[str, _FolderWatch] | None) -> None:
        """Report every frame of a folder, and watch its new sub-folders (names as the
        listing spells them)."""
        for entry in self.source.query(relpath):
            inner = f"{relpath}/{entry.name}" if relpath else entry.name
            if entry.is_folder and watches is not None and inner not in watches:
                if self.source.recursive:
                    self._watch_if_folder(inner, watches)
            elif self.source.wanted(entry.name):
                self.source.announce(inner)
                self.on_change(inner)

    def _report_listing_changes(self) -> None:
        before = dict(self.source.last_listing or {})
        for entry in self.source.list_frames():
            if before.get(entry.relpath) != entry.stamp:
                self.on_change(entry.relpath)

    def _poll_listings(self) -> None:
        """List every poll_interval; what is new or changed since the last listing is
        reported (the first listing only sets the reference: rescans catch up)."""
        known = dict(self.source.last_listing or {})
        while not self._stop.wait(self.source.poll_interval):
            current = {e.relpath: e.stamp for e in self.source.list_frames()}
            for relpath, version in current.items():
                if known.get(relpath) != version:
                    self.on_change(relpath)
            known = current
