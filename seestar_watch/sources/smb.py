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
import itertools
import socket
import stat
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import smbclient
from smbclient._io import SMBDirectoryIO
from smbprotocol.change_notify import (
    CompletionFilter,
    FileAction,
    FileSystemWatcher,
)
from smbprotocol.exceptions import (
    NoMoreFiles,
    NoSuchFile,
    SMBAuthenticationError,
    SMBException,
    SMBOSError,
)
from smbprotocol.file_info import FileAttributes, FileInformationClass
from smbprotocol.open import QueryDirectoryFlags, SMB2QueryDirectoryResponse
from smbprotocol.structure import DateTimeField

from seestar_watch.config import SmbUrl
from seestar_watch.log import get_logger
from seestar_watch.sources import Availability, Entry, OnChange, ShareState, frame_filter

log = get_logger("seestar_watch.sources.smb")
T = TypeVar("T")

READ_CHUNK = 1 << 20  # bytes asked for in one SMB read
LOOK_AGAIN_AFTER = 1.0  # seconds after a new folder is watched, it is listed once more
FULL_CHECK_EVERY = 60.0  # seconds between two checks that list the folder (ECHO between)
# what is reported: names (new frames, new target folders, renames), sizes and times
NOTIFY_FILTER = (
    CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME
    | CompletionFilter.FILE_NOTIFY_CHANGE_DIR_NAME
    | CompletionFilter.FILE_NOTIFY_CHANGE_SIZE
    | CompletionFilter.FILE_NOTIFY_CHANGE_LAST_WRITE
)
GONE_ACTIONS = (FileAction.FILE_ACTION_REMOVED, FileAction.FILE_ACTION_RENAMED_OLD_NAME)
REPARSE = FileAttributes.FILE_ATTRIBUTE_REPARSE_POINT
DIRECTORY = FileAttributes.FILE_ATTRIBUTE_DIRECTORY

# A guest login with no password: smbprotocol has no anonymous session; these settings are
# the recipe that works against Samba guest shares such as the Seestar's "EMMC Images".
smbclient.ClientConfig(require_secure_negotiate=False, skip_dfs=True)


class SmbClient:
    """One connection to one server, every call bounded by `timeout` seconds."""

    def __init__(self, url: SmbUrl, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._cache: dict[str, Any] = {}  # smbclient's connection cache, ours alone
        self._lock = threading.Lock()
        self._deadlines = _Deadlines(self.reset)

    @property
    def options(self) -> dict[str, Any]:
        """The keyword arguments every smbclient call takes to use this connection."""
        return {"connection_cache": self._cache, "port": self.url.port}

    def unc(self, relpath: str = "") -> str:
        """\\\\host\\share\\folder\\relpath, as SMB names it."""
        parts = [self.url.share, *self.url.folder, *(p for p in relpath.split("/") if p)]
        return "\\\\" + self.url.host + "\\" + "\\".join(parts)

    def call(self, function: Callable[[], T]) -> T:
        """Run one SMB operation, connecting first if need be; OSErrors only, bounded."""
        with self._deadlines.bounded(self.timeout) as expired:
            try:
                self._connect()
                return function()
            except SMBOSError as exc:
                if expired():
                    raise _timed_out(self.timeout) from None
                raise OSError(exc.errno, _ntstatus_words(exc), exc.filename) from None
            except (SMBException, OSError, ValueError) as exc:
                self.reset()
                if expired():
                    raise _timed_out(self.timeout) from None
                raise unreachable(self.url, exc) from None

    def _connect(self) -> None:
        with self._lock:
            if self._cache:
                return
            smbclient.register_session(
                self.url.host,
                username=self.url.username,
                password=self.url.password,
                port=self.url.port,
                require_signing=False,
                auth_protocol="ntlm",
                connection_timeout=max(1, round(self.timeout)),
                connection_cache=self._cache,
            )

    @property
    def connected(self) -> bool:
        return bool(self._cache)

    def echo(self) -> None:
        """One SMB2 ECHO on the connection: is the server still answering? Bounded."""

        def echo() -> None:
            for connection in list(self._cache.values()):
                for session in list(connection.session_table.values()):
                    connection.echo(sid=session.session_id, timeout=max(1, round(self.timeout)))
                    return

        self.call(echo)

    def shares(self) -> list[str]:
        """The disk shares the server lists, through this client's session."""
        for connection in list(self._cache.values()):
            for session in list(connection.session_table.values()):
                return list_shares(session, self.url.host)
        return []

    def reset(self) -> None:
        """Close the connection: every call waiting on it fails at once; the next reconnects."""
        with self._lock:
            connections = list(self._cache.values())
            self._cache.clear()
        for connection in connections:
            try:
                connection.disconnect(close=False)
            except Exception:  # already broken: nothing more to close
                log.debug("smb.disconnect_failed", host=self.url.host)


class _Deadlines:
    """One thread that calls `on_expire` when a bounded call outlives its deadline."""

    def __init__(self, on_expire: Callable[[], None]) -> None:
        self._on_expire = on_expire
        self._cond = threading.Condition()
        self._calls: dict[int, float] = {}
        self._expired: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def bounded(self, timeout: float) -> Iterator[Callable[[], bool]]:
        token = next(self._tokens)
        with self._cond:
            self._calls[token] = time.monotonic() + timeout
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="seestar-watch-smb-deadlines", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        try:
            yield lambda: token in self._expired
        finally:
            with self._cond:
                self._calls.pop(token, None)
                self._expired.discard(token)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._calls:
                    self._cond.wait()
                token, deadline = min(self._calls.items(), key=lambda item: item[1])
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                del self._calls[token]
                self._expired.add(token)
            self._on_expire()


def _timed_out(timeout: float) -> OSError:
    return OSError(errno.ETIMEDOUT, f"the server did not answer within {timeout:g} s")


def _ntstatus_words(exc: SMBOSError) -> str:
    return str(exc.strerror or exc).split(": ", 1)[-1]


def unreachable(url: SmbUrl, exc: BaseException) -> OSError:
    """A connection-level failure as an OSError whose message says what was refused."""
    exc = _root_cause(exc)
    if isinstance(exc, socket.gaierror):
        hint = " (a .local name needs mDNS: avahi on Linux; or use the scope's IP address)"
        return OSError(
            errno.EHOSTUNREACH,
            f"cannot resolve {url.host}{hint if url.host.endswith('.local') else ''}",
        )
    if isinstance(exc, SMBAuthenticationError) or "LogonFailure" in type(exc).__name__:
        return OSError(errno.ENOTCONN, f"the server refused the {url.username!r} login: {exc}")
    if "BadNetworkName" in type(exc).__name__:
        return OSError(
            errno.ENOENT,
            f"{url.host} has no share named {url.share!r} (`seestar-watch check-mount`"
            " lists the shares it offers)",
        )
    if isinstance(exc, ConnectionRefusedError):
        return OSError(errno.ENOTCONN, f"{url.host}:{url.port} refused the connection")
    if isinstance(exc, TimeoutError | socket.timeout):
        return OSError(errno.ETIMEDOUT, f"{url.host}:{url.port} did not answer")
    words = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return OSError(errno.ENOTCONN, f"{url.host}: {words}")


def _root_cause(exc: BaseException) -> BaseException:
    """The socket error under smbprotocol's "Failed to connect" wrapper, when there is one."""
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
        if isinstance(seen, OSError):
            return seen
    return exc


# FILE_ID_FULL_DIR_INFORMATION (MS-FSCC 2.4.18), read with struct: smbprotocol's own
# parser costs about 60 us an entry, and a rescan of 2,000 frames and their jpg twins is
# 4,000 entries (a quarter of a CPU second, every rescan_interval).
_ENTRY = struct.Struct("<II8x8xq8xq8xIII4x8x")  # next, index, mtime, size, attributes, name, ea
_ENTRY_NAME_AT = 80


def _directory_entries(handle: Any) -> Iterator[tuple[str, bool, int, int]]:
    """(name, is a folder, size, mtime_ns) of each entry of an open folder; links and other
    reparse points are left out, as a local listing never follows a symlink."""
    flags = QueryDirectoryFlags.SMB2_RESTART_SCANS
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
        yield from _parse_entries(answer["buffer"].get_value())
        flags = 0


def _parse_entries(buffer: bytes) -> Iterator[tuple[str, bool, int, int]]:
    offset = 0
    while offset < len(buffer):
        following, _, write_time, size, attributes, length, _ = _ENTRY.unpack_from(buffer, offset)
        start = offset + _ENTRY_NAME_AT
        name = buffer[start : start + length].decode("utf-16-le")
        if name not in (".", "..") and not attributes & REPARSE:
            mtime_ns = (write_time - DateTimeField.EPOCH_FILETIME) * 100
            yield name, bool(attributes & DIRECTORY), size, mtime_ns
        if not following:
            return
        offset += following


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

    def _look(self) -> tuple[int, int]:
        info = self._client.call(
            lambda: smbclient.stat(self._unc, follow_symlinks=False, **self._client.options)
        )
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", self._unc)
        return info.st_size, info.st_mtime_ns

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
        self._watcher: _Watcher | None = None
        self._notify_silent = False
        self._last_listing: dict[str, tuple[int, int]] | None = None
        self._announced: set[str] = set()  # relpaths notifications named since the last listing
        self._suspects: set[str] = set()  # changed at the last listing, not announced yet
        self._announced_lock = threading.Lock()
        self._full_check_due = 0.0  # when check() lists the folder again instead of an ECHO

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
        listing: dict[str, tuple[int, int]] = {}
        folders = [""]
        while folders:
            folder = folders.pop()
            for name, is_folder, size, mtime_ns in self._query(folder):
                relpath = f"{folder}/{name}" if folder else name
                if is_folder:
                    if self.recursive:
                        folders.append(relpath)
                elif self.wanted(name):
                    listing[relpath] = (size, mtime_ns)
                    yield Entry(relpath, size, mtime_ns)
        self._compare_with_notifications(listing)

    def _query(self, folder: str) -> list[tuple[str, bool, int, int]]:
        """(name, is a folder, size, mtime_ns) of each entry; links and other reparse points
        are left out, as a local listing never follows a symlink."""

        def query() -> list[tuple[str, bool, int, int]]:
            with SMBDirectoryIO(
                self.client.unc(folder), share_access="rwd", **self.client.options
            ) as handle:
                return list(_directory_entries(handle.fd))

        return self.client.call(query)

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

    def folders(self) -> list[str]:
        """Every folder below the watched one (only its own level when not recursive)."""
        if not self.recursive:
            return []
        found, waiting = [], [""]
        while waiting:
            folder = waiting.pop()
            for name, is_folder, _, _ in self._query(folder):
                if is_folder:
                    relpath = f"{folder}/{name}" if folder else name
                    found.append(relpath)
                    waiting.append(relpath)
        return found

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
        for name, is_folder, _, _ in self._query(""):
            if is_folder and any(
                not sub_is_folder and self.wanted(sub)
                for sub, sub_is_folder, _, _ in self._query(name)
            ):
                found.append(self.path_of(name))
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
        self._full_check_due = started + FULL_CHECK_EVERY
        try:
            self._query("")
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return ShareState(Availability.MISSING, self._missing())
            return ShareState(Availability.UNAVAILABLE, f"{self.location}: {exc.strerror}")
        return ShareState(Availability.AVAILABLE, "", None, time.monotonic() - started)

    def _missing(self) -> str:
        """Which is missing: the folder, or the share itself (then: which shares there are)."""
        share = "\\\\" + self.url.host + "\\" + self.url.share
        try:
            self.client.call(lambda: smbclient.listdir(share, **self.client.options))
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                return f"{self.location}: {exc.strerror}"
            offered = self.client.call(self.client.shares)
            names = ", ".join(repr(name) for name in offered) or "none it would list"
            return f"{self.url.host} has no share named {self.url.share!r} (it offers: {names})"
        return f"{self.location} does not exist (the share {self.url.share!r} does)"

    # -- changes --------------------------------------------------------------------

    def watch(self, on_change: OnChange) -> bool:
        if self._watcher is not None:
            return True
        notify = self.observer_kind == "auto" and not self._notify_silent
        watcher = _Watcher(self, on_change, notify=notify)
        if notify:
            try:
                watcher.arm_all()
            except OSError as exc:
                log.error("watcher.start_failed", path=self.location, error=exc.strerror)
                return False
        self._watcher = watcher
        watcher.start()
        self.observer_used = "notify" if notify else "polling"
        log.info(
            "watcher.started",
            path=self.location,
            observer=self.observer_used,
            reason="the server's change notifications, and listings for the truth"
            if notify
            else f"listings every {self.poll_interval:g} s",
            recursive=self.recursive,
        )
        return True

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
                    watcher = FileSystemWatcher(folder.fd)
                    watcher.start(NOTIFY_FILTER)
                    if not watcher.response_event.wait(wait):
                        watcher.cancel()  # pending: taken, and waiting for a change
                        return True, ""
                    try:
                        _ = watcher.result  # raises what the server answered, if it refused
                    except SMBException as exc:
                        why = _words(exc)
                        continue
                    return True, ""  # it answered at once with a change: taken too
                return False, why
            finally:
                folder.close()

        try:
            return self.client.call(probe)
        except OSError as exc:
            return False, str(exc.strerror)

    def _announce(self, relpath: str) -> None:
        with self._announced_lock:
            self._announced.add(relpath)

    def _compare_with_notifications(self, listing: dict[str, tuple[int, int]]) -> None:
        """A frame new or grown since the listing before, that no notification announced by
        the listing after: the server is silent about what is written on its own disk. Say
        it once, and list every poll_interval from then on.

        Judged one listing late, because a listing can see a frame a few milliseconds
        before its notification is handled; judged only between listings made while the
        notifications were armed."""
        previous, self._last_listing = self._last_listing, listing
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

    def _notifications_armed(self) -> None:
        """Notifications are pending from now on: the next listing is the reference."""
        self._last_listing = None
        self._suspects = set()


class _Relay(threading.Event):
    """A watcher's answer event that also wakes the one thread waiting on all of them."""

    def __init__(self, any_answer: threading.Event) -> None:
        super().__init__()
        self._any_answer = any_answer

    def set(self) -> None:
        super().set()
        self._any_answer.set()


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
        self.pending: FileSystemWatcher | None = None
        self.arm()

    def arm(self) -> None:
        watcher = FileSystemWatcher(self.handle.fd)
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


class _Watcher:
    """The thread that hears changes: a change notification pending on every folder
    (Samba reports what is written on its own disk only for the folder a request is on,
    not below it), or listings every poll_interval compared with the one before."""

    def __init__(self, source: SmbSource, on_change: OnChange, *, notify: bool) -> None:
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
        while not self._stop.is_set():
            try:
                if self.notify:
                    self._hear_notifications()
                else:
                    self._poll_listings()
            except OSError as exc:  # the share's trouble: the supervisor sees it too
                log.debug("smb.watch_interrupted", error=str(exc))
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
        self.source._notifications_armed()

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
            actions = watch.pending.result
        except SMBException as exc:  # e.g. STATUS_NOT_IMPLEMENTED (ksmbd), or a folder gone
            if watch.relpath:
                watch.close()
                del watches[watch.relpath]
                return
            log.warning(
                "smb.notify_unsupported",
                reason=_words(exc),
                note=f"listing every {self.source.poll_interval:g} s instead",
            )
            self.notify = False
            return
        if actions is None:  # cancelled, or the connection died: the supervisor will see
            raise OSError(errno.ENOTCONN, "the change notification was cut off")
        watch.arm()
        if not actions:  # the server's buffer overflowed: look at what changed
            self._report_listing_changes()
            return
        for action in actions:
            if action["action"].get_value() in GONE_ACTIONS:
                continue
            name = action["file_name"].get_value().replace("\\", "/")
            relpath = f"{watch.relpath}/{name}" if watch.relpath else name
            if self.source.wanted(name.rpartition("/")[2]):
                self.source._announce(relpath)
                self.on_change(relpath)
            elif relpath not in watches and self.source.recursive:
                self._watch_if_folder(relpath, watches)

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
        for name, is_folder, _, _ in self.source._query(relpath):
            inner = f"{relpath}/{name}"
            if is_folder and watches is not None and inner not in watches:
                self._watch_if_folder(inner, watches)
            elif self.source.wanted(name):
                self.source._announce(inner)
                self.on_change(inner)

    def _report_listing_changes(self) -> None:
        before = dict(self.source._last_listing or {})
        for entry in self.source.list_frames():
            if before.get(entry.relpath) != (entry.size, entry.mtime_ns):
                self.on_change(entry.relpath)

    def _poll_listings(self) -> None:
        """List every poll_interval; what is new or changed since the last listing is
        reported (the first listing only sets the reference: rescans catch up)."""
        known = dict(self.source._last_listing or {})
        while not self._stop.wait(self.source.poll_interval):
            current = {e.relpath: (e.size, e.mtime_ns) for e in self.source.list_frames()}
            for relpath, version in current.items():
                if known.get(relpath) != version:
                    self.on_change(relpath)
            known = current


# -- check-mount: every step of reaching the share, in order -------------------------


@dataclass
class Diagnosis:
    steps: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    latency_ms: float | None = None
    frames: int | None = None
    targets: int | None = None
    observer: str | None = None

    def say(self, name: str, status: str, detail: str, fix: str | None = None) -> bool:
        self.steps.append((name, status, detail, fix))
        return status != "fail"


DIALECTS = {0x0202: "2.0.2", 0x0210: "2.1", 0x0300: "3.0", 0x0302: "3.0.2", 0x0311: "3.1.1"}


def diagnose(url: SmbUrl, timeout: float, *, ignore: tuple[str, ...], observer: str) -> Diagnosis:
    """Host, port, dialect, login, share, folder, listing, frames, notifications."""
    found = Diagnosis()
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(0.5, deadline - time.monotonic())

    if not (_resolves(found, url) and _answers(found, url, left())):
        return found
    if not _session_and_share(found, url, left()):
        return found
    source = SmbSource(url, recursive=True, ignore=ignore, timeout=left())
    try:
        if _lists(found, source):
            _hears(found, source, observer, min(1.0, left()))
    finally:
        source.client.reset()
    return found


def _resolves(found: Diagnosis, url: SmbUrl) -> bool:
    try:
        address = socket.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)[0][4][0]
    except (socket.gaierror, UnicodeError) as exc:
        mdns = url.host.endswith(".local")
        return found.say(
            "host",
            "fail",
            f"cannot resolve {url.host}: {getattr(exc, 'strerror', None) or exc}",
            "a .local name needs mDNS: on Linux `sudo apt install avahi-daemon libnss-mdns`;"
            " or use the scope's IP address (shown in the Seestar app)"
            if mdns
            else "check the host name, or use the scope's IP address",
        )
    return found.say("host", "ok", f"{url.host} is {address}")


def _answers(found: Diagnosis, url: SmbUrl, timeout: float) -> bool:
    started = time.monotonic()
    try:
        socket.create_connection((url.host, url.port), timeout=timeout).close()
    except OSError as exc:
        return found.say(
            "port",
            "fail",
            f"{url.host}:{url.port} does not answer: {exc.strerror or exc}",
            "is the Seestar on, awake, and in station mode on this Wi-Fi?",
        )
    took = (time.monotonic() - started) * 1000
    return found.say("port", "ok", f"{url.port} answers ({took:.1f} ms)")


def _session_and_share(found: Diagnosis, url: SmbUrl, timeout: float) -> bool:
    from smbprotocol.connection import Connection
    from smbprotocol.session import Session
    from smbprotocol.tree import TreeConnect

    connection = Connection(uuid.uuid4(), url.host, url.port, require_signing=False)
    try:
        try:
            connection.connect(timeout=max(1, round(timeout)))
        except Exception as exc:
            return found.say(
                "dialect",
                "fail",
                f"no SMB 2 or 3 dialect agreed: {_words(exc)}",
                "seestar-watch speaks SMB 2.0.2 to 3.1.1; a server that speaks only SMB 1"
                " must be mounted instead (mount -t cifs -o vers=1.0)",
            )
        dialect = DIALECTS.get(connection.dialect, hex(connection.dialect))
        found.say("dialect", "ok", f"SMB {dialect}")
        session = Session(
            connection,
            username=url.username,
            password=url.password,
            require_encryption=False,
            auth_protocol="ntlm",
        )
        try:
            session.connect()
        except Exception as exc:
            return found.say(
                "login",
                "fail",
                f"the server refused the {url.username!r} login: {_words(exc)}",
                "the Seestar's share takes a guest login with no password: write the URL"
                " without user:password@",
            )
        found.say("login", "ok", f"{url.username!r} session accepted")
        try:
            TreeConnect(session, rf"\\{url.host}\{url.share}").connect(
                require_secure_negotiate=False
            )
        except Exception as exc:
            none: list[str] = []
            shares = _bounded(lambda: list_shares(session, url.host), min(3.0, timeout), none)
            offered = ", ".join(repr(s) for s in shares) if shares else "(none it would list)"
            fix = f"it offers: {offered}"
            if "EMMC Images" in shares:
                fix = f"use smb://{url.host}/EMMC Images/MyWorks ({fix})"
            why = "" if "BadNetworkName" in type(exc).__name__ else f": {_words(exc)}"
            return found.say(
                "share", "fail", f"no share named {url.share!r} on {url.host}{why}", fix
            )
        return found.say("share", "ok", f"{url.share!r}")
    finally:
        with contextlib.suppress(Exception):
            connection.disconnect(close=False)


def _lists(found: Diagnosis, source: SmbSource) -> bool:
    started = time.monotonic()
    try:
        source._query("")
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return found.say(
                "folder",
                "fail",
                f"{source.location} does not exist: {exc.strerror}",
                "the Seestar keeps its frames in MyWorks/:"
                f" smb://{source.url.host}/{source.url.share}/MyWorks",
            )
        return found.say("answers", "fail", f"{source.location}: {exc.strerror}")
    found.latency_ms = round((time.monotonic() - started) * 1000, 1)
    found.say("folder", "ok", f"{source.location} is a folder")
    found.say("answers", "ok", f"listed in {found.latency_ms} ms")
    try:
        frames = [entry.relpath for entry in source.list_frames()]
    except OSError as exc:
        return found.say("readable", "fail", f"listing failed: {exc.strerror}")
    found.frames = len(frames)
    found.targets = len({relpath.rpartition("/")[0] for relpath in frames})
    plural = "" if found.frames == 1 else "s"
    folders = "folder" if found.targets == 1 else "folders"
    return found.say(
        "readable", "ok", f"{found.frames} FITS frame{plural} in {found.targets} {folders}"
    )


def _hears(found: Diagnosis, source: SmbSource, observer: str, wait: float) -> None:
    accepted, why = source.accepts_notifications(wait)
    if observer == "polling":
        found.observer = "polling"
        found.say("observer", "ok", f"polling: a listing every {source.poll_interval:g} s")
    elif accepted:
        found.observer = "notify"
        found.say(
            "observer",
            "ok",
            "auto uses the server's change notifications (a frame is heard within"
            " milliseconds), and listings for the truth",
        )
    else:
        found.observer = "polling"
        found.say(
            "observer",
            "warning",
            f"the server does not accept change notifications ({why}): auto lists the"
            f" folder every poll_interval instead",
            "nothing to do; frames are seen poll_interval + debounce_delay after they arrive",
        )


def _bounded(function: Callable[[], T], timeout: float, otherwise: T) -> T:
    """`function()`, or `otherwise` when it does not answer within `timeout` seconds."""
    from seestar_watch.sources.bounded import ProbeTimeout, SingleFlight

    try:
        return SingleFlight("seestar-watch-smb-check").call(function, timeout)
    except ProbeTimeout:
        return otherwise


def _words(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- the shares a server offers: NetrShareEnum (MS-SRVS 3.1.4.8) over the IPC$ pipe -----

SRVSVC = (uuid.UUID("4b324fc8-1670-01d3-1278-5a47bf6ee188"), 3, 0)
NDR = (uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860"), 2)
NET_SHARE_ENUM = 15
LAST_FRAGMENT = 0x02


def list_shares(session: Any, host: str) -> list[str]:
    """The disk shares `host` lists (not the hidden `$` ones); [] when it will not say."""
    from smbprotocol.open import (
        CreateDisposition,
        CreateOptions,
        FilePipePrinterAccessMask,
        ImpersonationLevel,
        Open,
        ShareAccess,
    )
    from smbprotocol.tree import TreeConnect

    try:
        tree = TreeConnect(session, rf"\\{host}\IPC$")
        tree.connect(require_secure_negotiate=False)
        pipe = Open(tree, "srvsvc")
        pipe.create(
            ImpersonationLevel.Impersonation,
            FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE,
            0,
            ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
            CreateDisposition.FILE_OPEN,
            CreateOptions.FILE_NON_DIRECTORY_FILE,
        )
        try:
            _rpc(pipe, _bind_pdu())
            stub = _rpc(pipe, _request_pdu(NET_SHARE_ENUM, _share_enum_stub(host)))
        finally:
            pipe.close()
        return _share_names(stub)
    except Exception:  # a listing is a courtesy in an error message: never an error itself
        log.debug("smb.share_list_failed", host=host, exc_info=True)
        return []


def _rpc(pipe: Any, pdu: bytes) -> bytes:
    """Write one DCE/RPC PDU to the pipe; the answer's stub, fragments joined."""
    pipe.write(pdu, 0)
    stub = b""
    while True:
        answer = pipe.read(0, 65536)
        flags, length = answer[3], struct.unpack_from("<H", answer, 8)[0]
        stub += answer[24:length] if answer[2] == 2 else b""  # 2: a response PDU
        if flags & LAST_FRAGMENT or answer[2] != 2:
            return stub


def _header(kind: int, body: bytes, call_id: int) -> bytes:
    # version 5.0, first+last fragment, little-endian NDR, no authentication
    return (
        struct.pack("<BBBB4sHHI", 5, 0, kind, 0x03, b"\x10\x00\x00\x00", 16 + len(body), 0, call_id)
        + body
    )


def _bind_pdu() -> bytes:
    interface, major, minor = SRVSVC
    syntax, version = NDR
    body = struct.pack("<HHIBBH", 4280, 4280, 0, 1, 0, 0)
    body += struct.pack("<HBB", 0, 1, 0) + interface.bytes_le + struct.pack("<HH", major, minor)
    body += syntax.bytes_le + struct.pack("<I", version)
    return _header(11, body, 1)


def _request_pdu(opnum: int, stub: bytes) -> bytes:
    return _header(0, struct.pack("<IHH", len(stub), 0, opnum) + stub, 2)


def _ndr_string(text: str) -> bytes:
    chars = (text + "\0").encode("utf-16-le")
    count = len(chars) // 2
    data = struct.pack("<III", count, 0, count) + chars
    return data + b"\0" * (-len(data) % 4)


def _share_enum_stub(host: str) -> bytes:
    stub = struct.pack("<I", 0x00020000) + _ndr_string(host)  # ServerName, unique
    stub += struct.pack("<III", 1, 1, 0x00020004)  # level 1, its union arm, a container
    stub += struct.pack("<II", 0, 0)  # the container: no entries, no buffer yet
    return stub + struct.pack("<II", 0xFFFFFFFF, 0)  # no size limit, no resume handle


def _share_names(stub: bytes) -> list[str]:
    """The netnames of the disk shares in a NetrShareEnum level 1 answer."""
    level, _, container = struct.unpack_from("<III", stub, 0)
    if level != 1 or not container:
        return []
    count, buffer = struct.unpack_from("<II", stub, 12)
    if not buffer:
        return []
    position = 24  # past the array's conformance count
    entries = [struct.unpack_from("<III", stub, position + 12 * i) for i in range(count)]
    position += 12 * count
    names = []
    for netname, kind, remark in entries:
        name = ""
        for pointer in (netname, remark):
            if not pointer:
                continue
            actual = struct.unpack_from("<I", stub, position + 8)[0]
            text = stub[position + 12 : position + 12 + 2 * actual].decode("utf-16-le")
            position += 12 + 2 * actual + (-(2 * actual) % 4)
            if pointer == netname:
                name = text.rstrip("\0")
        if kind & 0xFFFF == 0 and not name.endswith("$"):  # a disk share, not hidden
            names.append(name)
    return names
