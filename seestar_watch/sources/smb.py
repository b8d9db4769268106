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
import time
from collections.abc import Iterator

import smbclient

from seestar_watch.log import get_logger
from seestar_watch.sources import Availability, OnChange, ShareState, Stamp, Version, frame_filter
from seestar_watch.sources.smbconnection import SmbClient
from seestar_watch.sources.smbnotify import Hearing, Notifications, accepts_notifications
from seestar_watch.sources.smbshares import list_shares
from seestar_watch.sources.smbtree import SmbTree
from seestar_watch.sources.smburl import SmbUrl

log = get_logger("seestar_watch.sources.smb")

READ_CHUNK = 1 << 20  # bytes asked for in one SMB read
FULL_CHECK_EVERY = 60.0  # seconds between two checks that list the folder (ECHO between)
REFUSAL_WAIT = 0.2  # seconds a new watch waits to hear whether the server refuses it


class SmbFrame:
    """A frame opened for reading over SMB, with every sharing mode (the scope keeps writing)."""

    def __init__(self, tree: SmbTree, relpath: str) -> None:
        self._tree = tree
        self._client = client = tree.client
        self._relpath = relpath
        self.size, self.mtime_ns = self._look()
        unc = client.unc(relpath)
        self._file = client.call(
            lambda: smbclient.open_file(
                unc, mode="rb", buffering=0, share_access="rwd", **client.options
            )
        )

    def _look(self) -> Stamp:
        info = self._tree.look(self._relpath)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", self._client.unc(self._relpath))
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
    """A folder of an SMB share, read with no mount: its tree read through `SmbTree`, its
    changes heard as `Hearing` decides."""

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
        self.poll_interval = poll_interval
        self.client = SmbClient(url, timeout)
        self.tree = SmbTree(
            self.client, recursive=recursive, wanted=self.wanted, path_of=self.path_of
        )
        self.hearing = Hearing(notify_allowed=observer == "auto", poll_interval=poll_interval)
        self._watcher: Notifications | None = None
        self._full_check_due = 0.0  # when check() lists the folder again instead of an ECHO
        self._root_failures_seen = 0  # the tree's count at the last check

    @property
    def observer_used(self) -> str | None:
        return self.hearing.mode

    # -- names --------------------------------------------------------------------

    def path_of(self, relpath: str) -> str:
        return self.url.url_of(relpath)

    def relpath_of(self, path: str) -> str | None:
        from seestar_watch.sources.smburl import parse_smb_url

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

    def list_frames(self) -> Iterator[Version]:
        """One directory query per folder; raises OSError rather than half a list."""
        listing = self.tree.frames()
        self.hearing.listed(listing)
        for relpath, version in listing.items():
            yield Version(relpath, version.size, version.mtime_ns)

    def stat(self, relpath: str) -> Version | None:
        info = self.tree.look(relpath)
        if not stat.S_ISREG(info.st_mode):
            return None
        return Version(relpath, info.st_size, info.st_mtime_ns)

    def open(self, relpath: str) -> SmbFrame:
        return SmbFrame(self.tree, relpath)

    def folders_with_frames(self) -> list[str]:
        found = []
        for folder in self.tree.query(""):
            if folder.is_folder and any(
                not entry.is_folder and self.wanted(entry.name)
                for entry in self.tree.query(folder.name)
            ):
                found.append(self.path_of(folder.name))
        return found

    # -- is it there? -------------------------------------------------------------

    def check(self, timeout: float) -> ShareState:
        """Connect if need be and list the watched folder, bounded; while it answers, an SMB
        ECHO is enough (one round trip), with a listing once every FULL_CHECK_EVERY, or
        at once after any listing of the watched folder failed."""
        started = time.monotonic()
        if self.tree.root_failures != self._root_failures_seen:
            self._root_failures_seen, self._full_check_due = self.tree.root_failures, 0.0
        if self.client.connected and started < self._full_check_due:
            try:
                self.client.echo()
                return ShareState(Availability.AVAILABLE, "", None, time.monotonic() - started)
            except OSError as exc:
                return ShareState(Availability.UNAVAILABLE, f"{self.location}: {exc.strerror}")
        try:
            self.tree.query("")
        except OSError as exc:  # counted by the tree: the next check lists again
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
        watcher = Notifications(
            self.tree, self.hearing, on_change, poll_interval=self.poll_interval
        )
        notify = self.hearing.may_notify
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
        self.hearing.started("notify" if notify else "polling", watcher.wake)
        self._watcher = watcher
        watcher.start()
        log.info(
            "watcher.started",
            path=self.location,
            observer=self.hearing.mode,
            reason=reason,
            recursive=self.recursive,
        )
        return True

    def unwatch(self, timeout: float) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            self.hearing.stopped()
            watcher.stop(timeout)

    def accepts_notifications(self, wait: float) -> tuple[bool, str]:
        """Whether the server takes a change-notification request: (yes, "") or (no, why)."""
        return accepts_notifications(self.tree, wait)
