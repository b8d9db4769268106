"""The SMB source: the telescope's share read over SMB2/3 with no mount at all (smbprotocol).

- Listings are the truth: one directory query per folder gives names, sizes and times
  together (never a stat per file).
- Changes are heard from the server (SMB2 CHANGE_NOTIFY on the watched folder, the
  whole tree), for latency only: a server may report nothing of what is written on
  its own disk, so when a listing finds a new or grown frame no notification
  announced, that is said once (`smb.notify_silent`) and the folder is listed every
  `poll_interval` from then on. `observer: polling` lists only.
- Read-only: frames are opened for reading with every sharing mode, so the telescope
  can keep writing; nothing is ever created, written, renamed or deleted on the share.
- Every call is bounded by `smb_timeout`: a call that outlives it tears the connection
  down (which wakes every call waiting on it), and the share is `lost` until a new
  connection answers. A scope that went to sleep never holds a thread for longer.
- Errors are OSErrors: ENOENT for a frame that is gone, ENOTCONN or ETIMEDOUT (in
  errors.SHARE_ERRNOS) when the share cannot be reached.
"""

from __future__ import annotations

import contextlib
import errno
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import smbclient
from smbclient._io import SMBDirectoryIO
from smbprotocol.exceptions import (
    NoMoreFiles,
    NoSuchFile,
    SMBException,
)
from smbprotocol.file_info import FileAttributes, FileInformationClass
from smbprotocol.open import QueryDirectoryFlags, SMB2QueryDirectoryResponse

from seestar_watch.config import SmbUrl
from seestar_watch.log import Repeats, get_logger
from seestar_watch.sources import (
    MAX_DEPTH,
    Availability,
    Entry,
    OnChange,
    ShareState,
    Stamp,
    frame_filter,
)
from seestar_watch.sources.smbconnection import SmbClient, first_line
from seestar_watch.sources.smbnotify import NOTIFY_FILTER, ChangeWatcher, Notifications
from seestar_watch.sources.smbshares import list_shares
from seestar_watch.sources.smbwire import Listed, malformed, parse_entries, unusable

log = get_logger("seestar_watch.sources.smb")
T = TypeVar("T")

READ_CHUNK = 1 << 20  # bytes asked for in one SMB read
FULL_CHECK_EVERY = 60.0  # seconds between two checks that list the folder (ECHO between)
REPARSE = FileAttributes.FILE_ATTRIBUTE_REPARSE_POINT
DIRECTORY = FileAttributes.FILE_ATTRIBUTE_DIRECTORY


MAX_ENTRIES = 100_000  # in one folder: a Seestar folder holds a few thousand files
REFUSAL_WAIT = 0.2  # seconds a new watch waits to hear whether the server refuses it


def _directory_entries(handle: Any) -> Iterator[Listed]:
    """Every entry of an open folder, `.` and `..` included; reparse points (links) are left
    out, as a local listing never follows a symlink. Raises OSError(EPROTO) on an answer
    that breaks the protocol, or that never ends."""
    flags = QueryDirectoryFlags.SMB2_RESTART_SCANS
    count = 0
    while True:
        query, _ = handle.query_directory(
            "*", FileInformationClass.FILE_ID_FULL_DIRECTORY_INFORMATION, flags=flags, send=False
        )
        session, tree = handle.tree_connect.session.session_id, handle.tree_connect.tree_connect_id
        request = handle.connection.send(query, session, tree)
        try:
            response = handle.connection.receive(request)
        except (NoMoreFiles, NoSuchFile):  # the end of the listing (MS-SMB2 3.3.5.18)
            return
        answer = SMB2QueryDirectoryResponse()
        answer.unpack(response["data"].get_value())
        for entry in parse_entries(answer["buffer"].get_value()):
            count += 1
            if count > MAX_ENTRIES:
                raise malformed(f"more than {MAX_ENTRIES:,} entries in one folder")
            yield entry
        flags = 0


class SmbFrame:
    """A frame opened for reading over SMB, with every sharing mode (the scope keeps writing)."""

    def __init__(self, client: SmbClient, relpath: str) -> None:
        self._client = client
        self._unc = client.unc(relpath)
        self.size, self.mtime_ns = self._look()
        self._file = client.call(
            lambda: smbclient.open_file(
                self._unc, mode="rb", buffering=0, share_access="rwd", **client.options
            )
        )

    def _look(self) -> Stamp:
        info = self._client.call(
            lambda: smbclient.stat(self._unc, follow_symlinks=False, **self._client.options)
        )
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", self._unc)
        return Stamp(info.st_size, info.st_mtime_ns)

    def read(self, count: int) -> bytes:
        chunks = []
        while count > 0:
            chunk = self._read(min(count, READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def _read(self, count: int) -> bytes:
        return self._client.call(lambda: self._file.read(count))  # type: ignore[no-any-return]

    def read_at(self, offset: int, count: int) -> bytes:
        def read() -> bytes:
            position = self._file.tell()
            try:
                self._file.seek(offset)
                return self._file.read(count)  # type: ignore[no-any-return]
            finally:
                self._file.seek(position)

        return self._client.call(read)

    def changed(self) -> bool:
        return self._look() != (self.size, self.mtime_ns)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a broken connection closed it already
            self._client.call(self._file.close)

    def __enter__(self) -> SmbFrame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SmbSource:
    """A folder of an SMB share, read with no mount."""

    def __init__(
        self,
        url: SmbUrl,
        *,
        recursive: bool = True,
        ignore: tuple[str, ...] = (),
        observer: str = "auto",
        poll_interval: float = 2.0,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.location = str(url)
        self.recursive = recursive
        self.wanted = frame_filter(ignore)
        self.observer_kind = observer
        self.poll_interval = poll_interval
        self.client = SmbClient(url, timeout)
        self.observer_used: str | None = None
        self._watcher: Notifications | None = None
        self._notify_silent = False
        self.last_listing: dict[str, Stamp] | None = None
        self._announced: set[str] = set()  # relpaths notifications named since the last listing
        self._suspects: set[str] = set()  # changed at the last listing, not announced yet
        self._announced_lock = threading.Lock()
        self._full_check_due = 0.0  # when check() lists the folder again instead of an ECHO
        self._refused = Repeats()  # names skipped, each said once

    # -- names --------------------------------------------------------------------

    def path_of(self, relpath: str) -> str:
        return self.url.url_of(relpath)

    def relpath_of(self, path: str) -> str | None:
        from seestar_watch.config import parse_smb_url

        try:
            given = parse_smb_url(path)
        except ValueError:
            return None
        if (given.host, given.port) != (self.url.host, self.url.port):
            return None
        root, inside = [self.url.share, *self.url.folder], [given.share, *given.folder]
        if inside[: len(root)] != root or len(inside) == len(root):
            return None
        return "/".join(inside[len(root) :])

    # -- what is there ----------------------------------------------------------

    def list_frames(self) -> Iterator[Entry]:
        """One directory query per folder; raises OSError rather than half a list."""
        listing: dict[str, Stamp] = {}
        for folder, entry, _ in self._walk():
            if not entry.is_folder and self.wanted(entry.name):
                relpath = f"{folder}/{entry.name}" if folder else entry.name
                listing[relpath] = Stamp(entry.size, entry.mtime_ns)
                yield Entry(relpath, entry.size, entry.mtime_ns)
        self._compare_with_notifications(listing)

    def folders(self) -> list[str]:
        """Every folder below the watched one that a listing enters (none when not
        recursive)."""
        return [
            f"{folder}/{entry.name}" if folder else entry.name
            for folder, entry, entered in self._walk()
            if entered
        ]

    def _walk(self) -> Iterator[tuple[str, Listed, bool]]:
        """(folder, entry, whether the walk enters it) for every entry below the watched
        folder; sub-folders are entered when recursive, but never one twice (its file id:
        a link on the server's disk that Samba follows shows as a plain folder), nor
        deeper than MAX_DEPTH."""
        own_id, entries = self.folder_listing("")
        entered = {own_id}
        waiting = [("", 0, entries)]
        while waiting:
            folder, depth, entries = waiting.pop()
            for entry in entries:
                enter = (
                    entry.is_folder
                    and self.recursive
                    and depth < MAX_DEPTH
                    and not (entry.file_id and entry.file_id in entered)
                )
                yield folder, entry, enter
                if enter:
                    entered.add(entry.file_id)
                    relpath = f"{folder}/{entry.name}" if folder else entry.name
                    waiting.append((relpath, depth + 1, self.query(relpath)))

    def query(self, folder: str) -> list[Listed]:
        """Each entry of `folder` (`.` and `..` and names that cannot be a path's step left
        out); links and other reparse points are left out, as a local listing never follows
        a symlink."""
        return self.folder_listing(folder)[1]

    def folder_listing(self, folder: str) -> tuple[int, list[Listed]]:
        """The folder's own file id (from its `.` entry; 0 when the server gives none) and
        its entries, as query() gives them."""

        def query() -> list[Listed]:
            with SMBDirectoryIO(
                self.client.unc(folder), share_access="rwd", **self.client.options
            ) as handle:
                return list(_directory_entries(handle.fd))

        try:
            answer = self.client.call(query)
        except OSError:
            if not folder:  # the watched folder itself: the next check() lists it again
                self._full_check_due = 0.0
            raise
        own_id, entries = 0, []
        for entry in answer:
            if entry.name == ".":
                own_id = entry.file_id
            elif entry.name != ".." and self._usable(folder, entry.name):
                entries.append(entry)
        return own_id, entries

    def _usable(self, folder: str, name: str) -> bool:
        problem = unusable(name)
        if problem is not None and self._refused.first(f"{folder}/{name}"):
            log.warning(
                "smb.name_refused",
                folder=self.path_of(folder),
                name=name.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace"),
                reason=problem,
            )
        return problem is None

    def stat(self, relpath: str) -> Entry | None:
        unc = self.client.unc(relpath)
        info = self.client.call(
            lambda: smbclient.stat(unc, follow_symlinks=False, **self.client.options)
        )
        if not stat.S_ISREG(info.st_mode):
            return None
        return Entry(relpath, info.st_size, info.st_mtime_ns)

    def open(self, relpath: str) -> SmbFrame:
        return SmbFrame(self.client, relpath)

    def is_folder(self, relpath: str) -> bool:
        unc = self.client.unc(relpath)
        try:
            info = self.client.call(
                lambda: smbclient.stat(unc, follow_symlinks=False, **self.client.options)
            )
        except FileNotFoundError:
            return False
        return stat.S_ISDIR(info.st_mode)

    def folders_with_frames(self) -> list[str]:
        found = []
        for folder in self.query(""):
            if folder.is_folder and any(
                not entry.is_folder and self.wanted(entry.name) for entry in self.query(folder.name)
            ):
                found.append(self.path_of(folder.name))
        return found

    # -- is it there? -------------------------------------------------------------

    def check(self, timeout: float) -> ShareState:
        """Connect if need be and list the watched folder, bounded; while it answers, an SMB
        ECHO is enough (one round trip), with a listing once every FULL_CHECK_EVERY."""
        started = time.monotonic()
        if self.client.connected and started < self._full_check_due:
            try:
                self.client.echo()
                return ShareState(Availability.AVAILABLE, "", None, time.monotonic() - started)
            except OSError as exc:
                return ShareState(Availability.UNAVAILABLE, f"{self.location}: {exc.strerror}")
        try:
            self.query("")
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return ShareState(Availability.MISSING, self._missing())
            return ShareState(Availability.UNAVAILABLE, f"{self.location}: {exc.strerror}")
        # the server answers and the folder is there: an ECHO says so until the next listing
        # (not before: a wrong share or folder answers an ECHO too)
        self._full_check_due = started + FULL_CHECK_EVERY
        return ShareState(Availability.AVAILABLE, "", None, time.monotonic() - started)

    def _missing(self) -> str:
        """Which is missing: the folder, or the share itself (then: which shares there are)."""
        share = "\\\\" + self.url.host + "\\" + self.url.share
        try:
            self.client.call(lambda: smbclient.listdir(share, **self.client.options))
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                return f"{self.location}: {exc.strerror}"
            session = self.client.session()
            offered = (
                []
                if session is None
                else self.client.call(lambda: list_shares(session, self.url.host))
            )
            names = ", ".join(repr(name) for name in offered) or "none it would list"
            return f"{self.url.host} has no share named {self.url.share!r} (it offers: {names})"
        return f"{self.location} does not exist (the share {self.url.share!r} does)"

    # -- changes --------------------------------------------------------------------

    def watch(self, on_change: OnChange) -> bool:
        if self._watcher is not None:
            return True
        notify = self.observer_kind == "auto" and not self._notify_silent
        watcher = Notifications(self, on_change, notify=notify)
        reason = f"listings every {self.poll_interval:g} s"
        if notify:
            try:
                watcher.arm_all()
            except OSError as exc:
                log.error("watcher.start_failed", path=self.location, error=exc.strerror)
                return False
            refused = watcher.refused_at_once(REFUSAL_WAIT)
            if refused is None:
                reason = "the server's change notifications, and listings for the truth"
            else:
                notify = False
                reason = f"the server refuses change notifications ({refused}): {reason}"
        self._watcher = watcher
        watcher.start()
        self.observer_used = "notify" if notify else "polling"
        log.info(
            "watcher.started",
            path=self.location,
            observer=self.observer_used,
            reason=reason,
            recursive=self.recursive,
        )
        return True

    def notifications_refused(self) -> None:
        """The server refused the watched folder's notification after all: listings."""
        self.observer_used = "polling"

    def unwatch(self, timeout: float) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop(timeout)

    def accepts_notifications(self, wait: float) -> tuple[bool, str]:
        """Whether the server takes a change-notification request: (yes, "") or (no, why).
        A request still pending after `wait` seconds is taken; one refused twice is not."""

        def probe() -> tuple[bool, str]:
            folder = smbclient.open_file(
                self.client.unc(),
                mode="rb",
                share_access="rwd",
                buffering=0,
                file_type="dir",
                **self.client.options,
            )
            try:
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
            finally:
                folder.close()

        try:
            return self.client.call(probe)
        except OSError as exc:
            return False, str(exc.strerror)

    def announce(self, relpath: str) -> None:
        with self._announced_lock:
            self._announced.add(relpath)

    def _compare_with_notifications(self, listing: dict[str, Stamp]) -> None:
        """A frame new or grown since the listing before, that no notification announced by
        the listing after: the server is silent about what is written on its own disk. Say
        it once, and list every poll_interval from then on.

        Judged one listing late, because a listing can see a frame a few milliseconds
        before its notification is handled; judged only between listings made while the
        notifications were armed."""
        previous, self.last_listing = self.last_listing, listing
        with self._announced_lock:
            announced, self._announced = self._announced, set()
        watcher = self._watcher
        if previous is None or watcher is None or not watcher.notify or self._notify_silent:
            self._suspects = set()
            return
        silent = sorted(self._suspects - announced)
        changed = {r for r, version in listing.items() if previous.get(r) != version}
        self._suspects = changed - announced
        if silent:
            self._notify_silent = True
            log.warning(
                "smb.notify_silent",
                example=silent[0],
                frames=len(silent),
                note=f"the server did not report them: listing every {self.poll_interval:g} s",
            )
            watcher.fall_back_to_listings()
            self.observer_used = "polling"

    def notifications_armed(self) -> None:
        """Notifications are pending from now on: the next listing is the reference."""
        self.last_listing = None
        self._suspects = set()
