"""The local source: a folder on this machine, often a mounted share.

Listing: os.scandir, symlinks never followed, only folders and FITS names looked
at (events give low latency; listings make correctness independent of them:
missed or overflowed inotify events, coalesced FSEvents, watchdog #1077).

Changes: watchdog (sources/events.py), native events on local disks and polling on
network and FUSE filesystems, where native events never report what the telescope
writes (research/watchdog.md, watchdog #409).

Availability: whether something is mounted, and where, comes from the mount table
only; what has to touch the share (a stat and a listing) runs on a single-flight
helper thread bounded by a timeout.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from seestar_watch.errors import SHARE_ERRNOS
from seestar_watch.log import get_logger
from seestar_watch.sources import (
    MAX_DEPTH,
    Availability,
    OnChange,
    ShareState,
    Version,
    frame_filter,
    name_problem,
)
from seestar_watch.sources.bounded import ProbeTimeout, SingleFlight
from seestar_watch.sources.mounts import (
    choose_observer,
    mount_at,
    mount_containing,
    not_mounted_reason,
    read_mount_table,
)
from seestar_watch.sources.poller import (
    Fingerprint,
    FolderPoller,
    repeats_an_ancestor,
    split_entries,
)

if TYPE_CHECKING:
    from seestar_watch.config import ObserverKind

log = get_logger("seestar_watch.sources.local")


class LocalSource:
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        recursive: bool = True,
        ignore: tuple[str, ...] = (),
        observer: ObserverKind = "auto",
        poll_interval: float = 2.0,
        mount_point: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.location = self.root
        self.recursive = recursive
        self.wanted = frame_filter(ignore)
        self.observer_kind = observer
        self.poll_interval = poll_interval
        self.mount_point = None if mount_point is None else os.path.abspath(mount_point)
        self.observer_used: str | None = None
        self._observer: Any = None  # a watchdog observer while watching
        self._prober = SingleFlight("seestar-watch-probe")

    # -- names ------------------------------------------------------------------

    def path_of(self, relpath: str) -> str:
        return os.path.join(self.root, relpath)

    def relpath_of(self, path: str) -> str | None:
        absolute = os.path.abspath(path)
        if os.path.commonpath([self.root, absolute]) != self.root or absolute == self.root:
            return None
        return os.path.relpath(absolute, self.root)

    # -- what is there ------------------------------------------------------------

    def list_frames(self) -> Iterator[Version]:
        """Every regular file below root whose name is wanted.

        A sub-folder that vanished or cannot be read is skipped; an unreadable root, or
        an I/O error from the share anywhere, raises OSError (half a list is not the truth).
        A folder seen again (by what it holds) is not entered twice.
        """
        held: set[Fingerprint] = set()  # what each folder listed held: none is seen twice
        names_of: dict[str, frozenset[str]] = {}  # the names each folder listed held
        folders = deque([(self.root, 0)])  # shallow first: a folder seen again is the deeper
        while folders:
            folder, depth = folders.popleft()
            try:
                with os.scandir(folder) as entries:
                    listed = split_entries(list(entries), self.wanted)
            except OSError as exc:
                if folder == self.root or exc.errno in SHARE_ERRNOS:
                    raise
                continue
            if repeats_an_ancestor(folder, listed.names, names_of, self.root):
                continue  # a link the server follows back up (loop -> .)
            names_of[folder] = listed.names
            if listed.fingerprint is not None:
                if listed.fingerprint in held:
                    continue  # a folder seen again: a link the server follows (loop -> .)
                held.add(listed.fingerprint)
            if self.recursive and depth < MAX_DEPTH:
                folders += [(path, depth + 1) for path in listed.subfolders]
            for path, info in listed.frames:
                yield Version(os.path.relpath(path, self.root), info.st_size, info.st_mtime_ns)

    def stat(self, relpath: str) -> Version | None:
        info = os.lstat(self.path_of(relpath))
        if not stat.S_ISREG(info.st_mode):
            return None  # FIFOs, symlinks, devices, folders: never opened, never reported
        return Version(relpath, info.st_size, info.st_mtime_ns)

    def open(self, relpath: str) -> LocalFrame:
        return LocalFrame(self.path_of(relpath))

    def folders_with_frames(self, limit: int = 1000) -> list[str]:
        with os.scandir(self.root) as entries:
            folders = sorted(e.path for e in entries if e.is_dir(follow_symlinks=False))
        found = []
        for folder in folders[:limit]:
            try:
                with os.scandir(folder) as entries:
                    if any(self.wanted(e.name) for e in entries):
                        found.append(folder)
            except OSError as exc:
                if exc.errno in SHARE_ERRNOS:
                    raise
        return found

    # -- is it there? -------------------------------------------------------------

    def check(self, timeout: float) -> ShareState:
        """Is root on an active mount (at mount_point, when set) and answering?"""
        mounts = read_mount_table()
        if self.mount_point is not None:
            mount = mount_at(self.mount_point, mounts)
            if mount is None:
                return ShareState(
                    Availability.MISSING, not_mounted_reason(self.mount_point, mounts)
                )
        else:
            mount = mount_containing(self.root, mounts)
        try:
            latency = self._prober.call(lambda: probe_folder(self.root), timeout)
        except ProbeTimeout as exc:
            return ShareState(Availability.UNAVAILABLE, f"{self.root}: {exc}", mount)
        except OSError as exc:
            return ShareState(*_classify(self.root, exc), mount)
        return ShareState(Availability.AVAILABLE, "", mount, latency)

    # -- changes ------------------------------------------------------------------

    def watch(self, on_change: OnChange) -> bool:
        if self._observer is not None:
            return True
        if not os.path.isdir(self.root):
            what = "does not exist" if not os.path.lexists(self.root) else "is not a folder"
            log.error("watcher.path_unusable", path=self.root, problem=what)
            return False
        kind, reason = choose_observer(
            self.observer_kind, os.path.realpath(self.root), read_mount_table()
        )
        try:
            observer = self._start(kind, lambda path: self._changed(path, on_change))
        except OSError as exc:  # e.g. inotify watch limit reached, folder vanished
            log.error("watcher.start_failed", path=self.root, error=str(exc))
            return False
        self._observer, self.observer_used = observer, kind
        log.info(
            "watcher.started",
            path=self.root,
            observer=kind,
            reason=reason,
            recursive=self.recursive,
        )
        return True

    def _start(self, kind: str, on_path: Callable[[str], None]) -> Any:
        """Native events through watchdog, or our own poller (its cost follows the folders
        that change, not the frames kept). Raises OSError."""
        if kind == "polling":
            poller = FolderPoller(
                self.root,
                recursive=self.recursive,
                wanted=self.wanted,
                interval=self.poll_interval,
                on_path=on_path,
            )
            poller.start()
            return poller
        from seestar_watch.sources import events  # watchdog: only once something is watched

        return events.start_observer(self.root, on_path, recursive=self.recursive)

    def unwatch(self, timeout: float) -> None:
        observer, self._observer = self._observer, None
        if isinstance(observer, FolderPoller):
            observer.stop(timeout)
        elif observer is not None:
            observer.stop()
            # join() has no timeout of its own worth trusting on a hung share
            observer.join(timeout)

    def _changed(self, path: str, on_change: OnChange) -> None:
        relpath = self.relpath_of(path)
        if relpath is None or not self.wanted(os.path.basename(path)):
            return
        folders = relpath.split(os.sep)[:-1]
        if len(folders) <= MAX_DEPTH and not any(map(name_problem, folders)):
            on_change(relpath)  # the same paths as a listing gives


class LocalFrame:
    """A local frame opened read-only: O_NOFOLLOW (never through a link), O_NONBLOCK (a
    FIFO never blocks the open), regular files only, no memory-mapping."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            info = os.fstat(self._fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", path)
        except BaseException:
            os.close(self._fd)
            raise
        self.size, self.mtime_ns = info.st_size, info.st_mtime_ns

    def read(self, count: int) -> bytes:
        chunks = []
        while count > 0:
            chunk = os.read(self._fd, count)
            if not chunk:
                break
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def read_at(self, offset: int, count: int) -> bytes:
        return os.pread(self._fd, count, offset)

    def changed(self) -> bool:
        info = os.fstat(self._fd)
        return (info.st_size, info.st_mtime_ns) != (self.size, self.mtime_ns)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LocalFrame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- bounded looks at the folder -----------------------------


def probe_folder(path: str) -> float:
    """stat and start listing `path`; the seconds it took. Raises OSError."""
    started = time.monotonic()
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", path)
    with os.scandir(path) as entries:
        next(entries, None)
    return time.monotonic() - started


def _classify(watch: str, exc: OSError) -> tuple[Availability, str]:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        what = "does not exist" if exc.errno == errno.ENOENT else "is not a folder"
        return Availability.MISSING, f"{watch} {what}"
    if exc.errno in SHARE_ERRNOS:
        return Availability.UNAVAILABLE, f"{watch}: {os.strerror(exc.errno or 0)}"
    return Availability.UNAVAILABLE, f"{watch}: {exc.strerror or exc}"
