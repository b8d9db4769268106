"""Hearing changes on an SMB share: a change notification pending on every folder.

Samba reports what is written on its own disk only for the folder a notification
request is on, not below it: so one request per folder, new target folders watched
as they appear (and listed once more a second later: the server may start watching
a new folder's disk a moment after the request). A notification answers once and is
armed again at once. When the server will not notify, or a listing shows it is
silent, the same thread lists every poll_interval instead.

How changes are heard is decided in one place, `Hearing`: it is handed every finished
listing and every frame a notification named, and holds the mode and the evidence.
`Notifications` is the thread that does what it decided, reading the share through
the read-only `SmbTree`.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections.abc import Callable
from typing import Any

from smbprotocol.change_notify import (
    CompletionFilter,
    FileAction,
    FileSystemWatcher,
    SMB2ChangeNotifyResponse,
)
from smbprotocol.exceptions import SMBException
from smbprotocol.header import NtStatus

from seestar_watch.log import Repeats, get_logger
from seestar_watch.sources import OnChange
from seestar_watch.sources.smbconnection import first_line
from seestar_watch.sources.smbtree import Listing, SmbTree, changed_since
from seestar_watch.sources.smbwire import malformed, parse_changes, spelled_as_listed

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


class Hearing:
    """How the share's changes are heard, decided in one place: by the server's change
    notifications (for latency, listings staying the truth) or by listings every
    poll_interval; and the evidence that moves it from the one to the other for good.

    No I/O, no thread of its own: the source hands it every finished listing (`listed`),
    the notifications thread every frame a notification named (`announce`), every new
    arming (`armed`) and a refusal (`refused`)."""

    def __init__(self, *, notify_allowed: bool, poll_interval: float) -> None:
        self.mode: str | None = None  # "notify" or "polling" once watching (kept after)
        self.watching = False  # between started() and stopped()
        self.silent = False  # a listing found what the server never reported
        self._allowed = notify_allowed  # observer: auto (polling lists only)
        self._poll_interval = poll_interval
        self._wake: Callable[[], None] = lambda: None  # the thread, told of a new mode
        self._lock = threading.Lock()
        self._reference: Listing | None = None  # the last listing
        self._announced: set[str] = set()  # relpaths notifications named since it
        self._suspects: set[str] = set()  # changed at the last listing, not announced yet

    @property
    def may_notify(self) -> bool:
        """Whether a new watch should ask for notifications."""
        return self._allowed and not self.silent

    @property
    def notifying(self) -> bool:
        return self.mode == "notify"

    def started(self, mode: str, wake: Callable[[], None]) -> None:
        """A watch began in `mode`; `wake` rouses its thread when the mode changes."""
        self.mode, self._wake, self.watching = mode, wake, True

    def stopped(self) -> None:
        """The watch ended: no notification is heard until the next one is armed, so the
        listings made meanwhile judge nothing (the mode stays, for the status)."""
        self._wake, self.watching = (lambda: None), False

    def armed(self) -> None:
        """Notifications are pending from now on: the next listing is the reference."""
        with self._lock:
            self._reference, self._suspects = None, set()

    def announce(self, relpath: str) -> None:
        with self._lock:
            self._announced.add(relpath)

    def refused(self, reason: str) -> None:
        """The server refused the watched folder's notification: listings from now on."""
        log.warning(
            "smb.notify_unsupported",
            reason=reason,
            note=f"listing every {self._poll_interval:g} s instead",
        )
        self._fall_back()

    def reference(self) -> Listing:
        """The last listing (empty before the first): what a new listing is compared with."""
        with self._lock:
            return dict(self._reference or {})

    def listed(self, listing: Listing) -> None:
        """A finished listing. A frame new or grown since the listing before, that no
        notification announced by the listing after: the server is silent about what is
        written on its own disk. Said once, and listings every poll_interval from then on.

        Judged one listing late, because a listing can see a frame a few milliseconds
        before its notification is handled; judged only between listings made while the
        notifications were armed."""
        with self._lock:
            previous, self._reference = self._reference, listing
            announced, self._announced = self._announced, set()
            if previous is None or not (self.watching and self.notifying):
                self._suspects = set()
                return
            silent = sorted(self._suspects - announced)
            self._suspects = set(changed_since(previous, listing)) - announced
        if silent:
            self.silent = True
            log.warning(
                "smb.notify_silent",
                example=silent[0],
                frames=len(silent),
                note=f"the server did not report them: listing every {self._poll_interval:g} s",
            )
            self._fall_back()

    def _fall_back(self) -> None:
        self.mode = "polling"
        self._wake()


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

    def __init__(self, tree: SmbTree, relpath: str, any_answer: threading.Event) -> None:
        self.client = tree.client
        self.relpath = relpath
        self._any_answer = any_answer
        self.handle = tree.open_folder(relpath)
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
    """The thread that hears changes as `Hearing` decides: a change notification pending
    on every folder (Samba reports what is written on its own disk only for the folder a
    request is on, not below it), or listings every poll_interval compared with the one
    before. One thread per watch: a new watch gets a new one."""

    def __init__(
        self, tree: SmbTree, hearing: Hearing, on_change: OnChange, *, poll_interval: float
    ) -> None:
        self.tree = tree
        self.hearing = hearing
        self.on_change = on_change
        self.poll_interval = poll_interval
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

    def wake(self) -> None:
        """Look at the mode again (the hearing changed it)."""
        self._any_answer.set()

    def _run(self) -> None:
        failures = Repeats()
        while not self._stop.is_set():
            try:
                if self.hearing.notifying:
                    self._hear_notifications()
                else:
                    self._poll_listings()
            except OSError as exc:  # the share's trouble: the supervisor sees it too
                log.debug("smb.watch_interrupted", error=str(exc))
            except Exception as exc:  # an answer nothing expected: armed again, said once
                if failures.first(exc):
                    log.exception("smb.watch_failed", error=f"{type(exc).__name__}: {exc}")
            self._stop.wait(1.0)

    def _listing(self) -> Listing:
        listing = self.tree.frames()
        self.hearing.listed(listing)
        return listing

    def arm_all(self) -> None:
        """A notification pending on every folder; raises OSError. Done before watch()
        returns, so that a listing made after it misses nothing."""
        watches: dict[str, _FolderWatch] = {}
        try:
            for folder in ["", *self.tree.folders()]:
                watches[folder] = _FolderWatch(self.tree, folder, self._any_answer)
        except BaseException:
            for watch in watches.values():
                watch.close()
            raise
        self._armed = watches
        self.hearing.armed()

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
            self._armed = {}
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
            while self.hearing.notifying and not self._stop.is_set():
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
        self.hearing.refused(first_line(exc))

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
            if self.tree.wanted(name):
                self._report(relpath)
            elif relpath not in watches and self.tree.recursive:
                self._watch_if_folder(relpath, watches)
        if list_folder:
            self._report_folder(watch.relpath, watches)

    def _report(self, relpath: str) -> None:
        """A frame a notification (or a folder's own listing) named."""
        self.hearing.announce(relpath)
        self.on_change(relpath)

    def _watch_if_folder(self, relpath: str, watches: dict[str, _FolderWatch]) -> None:
        """A new target folder: watch it, and report what it already holds."""
        if not self.tree.is_folder(relpath):
            return
        watches[relpath] = _FolderWatch(self.tree, relpath, self._any_answer)
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
        for entry in self.tree.query(relpath):
            inner = f"{relpath}/{entry.name}" if relpath else entry.name
            if entry.is_folder and watches is not None and inner not in watches:
                if self.tree.recursive:
                    self._watch_if_folder(inner, watches)
            elif self.tree.wanted(entry.name):
                self._report(inner)

    def _report_listing_changes(self) -> None:
        before = self.hearing.reference()
        for relpath in changed_since(before, self._listing()):
            self.on_change(relpath)

    def _poll_listings(self) -> None:
        """List every poll_interval; what is new or changed since the last listing is
        reported (the first listing only sets the reference: rescans catch up)."""
        known = self.hearing.reference()
        while not self._stop.wait(self.poll_interval):
            current = self._listing()
            for relpath in changed_since(known, current):
                self.on_change(relpath)
            known = current


def accepts_notifications(tree: SmbTree, wait: float) -> tuple[bool, str]:
    """Whether the server takes a change-notification request on the watched folder:
    (yes, "") or (no, why). A request still pending after `wait` seconds is taken; one
    refused twice is not."""

    def probe(folder: Any) -> tuple[bool, str]:
        why = ""
        for _ in range(2):  # a refusal may be a passing one (a server just started)
            watcher = ChangeWatcher(folder.fd)
            watcher.start(NOTIFY_FILTER)
            if not watcher.response_event.wait(wait):
                watcher.cancel()  # pending: taken, and waiting for a change
                return True, ""
            try:
                watcher.changes()  # raises what the server answered, if it refused
            except SMBException as exc:
                why = first_line(exc)
                continue
            return True, ""  # it answered at once with a change: taken too
        return False, why

    try:
        folder = tree.open_folder("")
        try:
            return tree.client.call(lambda: probe(folder))
        finally:
            with contextlib.suppress(OSError):
                tree.client.call(folder.close)
    except OSError as exc:
        return False, str(exc.strerror)
