"""Polling a folder tree at a cost that grows with what changes, not with the frames kept.

On network and FUSE mounts native events never come, so the tree is polled. watchdog's
polling observer builds and compares a snapshot of every file on every poll: a share
keeping 20,000 frames cost 15 % of a core while nothing happened. Here a poll stats each
folder; only a folder whose modification time moved (a file added, removed or renamed)
is listed again, and only files that changed recently are stat'ed again (a frame still
growing). Frames finished long ago cost nothing; a change to one of them is found by the
daemon's rescans (`rescan_interval`).
"""

from __future__ import annotations

import math
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from seestar_watch.log import Repeats, get_logger
from seestar_watch.sources import MAX_DEPTH, name_problem

log = get_logger("seestar_watch.sources.poller")

RECENT = 30.0  # seconds a file that changed is still stat'ed on every poll
HOT_POLLS = 3  # polls a folder is listed again after a change (coarse folder times)


Fingerprint = frozenset[tuple[str, int, int]]  # what a folder holds: names, sizes, times


@dataclass(frozen=True)
class Folder:
    """One listed folder: its sub-folders (never through a link), its regular files with a
    wanted name and their lstat, and what it holds (see `fingerprint`)."""

    subfolders: list[str]
    frames: list[tuple[str, os.stat_result]]
    fingerprint: Fingerprint | None
    names: frozenset[str]  # every name in it


def repeats_an_ancestor(
    folder: str, names: frozenset[str], names_of: Mapping[str, frozenset[str]], root: str
) -> bool:
    """Whether `folder` holds exactly the names a folder above it holds: a link the server
    follows back up (`loop -> .`), seen through a mount that gives each path its own inode.
    By names alone, so that a frame still being written (its size, its folder's time moving
    between the two listings) cannot make the second spelling look new."""
    if not names:
        return False
    parent = os.path.dirname(folder)
    while parent.startswith(root) and parent != folder:
        if names_of.get(parent) == names:
            return True
        if parent == root:
            return False
        folder, parent = parent, os.path.dirname(parent)
    return False


def split_entries(entries: list[os.DirEntry[str]], wanted: Callable[[str], bool]) -> Folder:
    """What a listing and a poll both look at in a folder.

    The fingerprint is every name with, for frames and sub-folders, its size and time:
    a link on the server's disk that the server follows (`MyWorks/loop -> .`) is a plain
    folder on a mount, and a FUSE mount gives each path its own inode number, so a folder
    seen again is known by what it holds (None for an empty one: nothing to see twice)."""
    folders, frames, held = [], [], []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if name_problem(entry.name) is None:
                folders.append(entry.path)
                held.append((entry.name, -1, _mtime(entry)))
            continue
        held.append((entry.name, 0, 0))
        if wanted(entry.name):
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                frames.append((entry.path, info))
                held[-1] = (entry.name, info.st_size, info.st_mtime_ns)
    return Folder(
        folders, frames, frozenset(held) or None, frozenset(entry.name for entry in entries)
    )


def _mtime(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_mtime_ns
    except OSError:
        return 0


class FolderPoller:
    def __init__(
        self,
        root: str,
        *,
        recursive: bool,
        wanted: Callable[[str], bool],
        interval: float,
        on_path: Callable[[str], None],
    ) -> None:
        self.root = root
        self.recursive = recursive
        self.wanted = wanted
        self.interval = interval
        self.on_path = on_path
        self._folders: dict[str, int] = {}  # folder -> its mtime_ns when it was listed
        self._hot: dict[str, int] = {}  # folder -> polls left to list it regardless
        self._files: dict[str, tuple[int, int, float]] = {}  # path -> size, mtime, changed at
        self._in_folder: dict[str, set[str]] = {}
        self._held: dict[str, Fingerprint] = {}  # folder -> what it held when last listed
        self._holders: dict[Fingerprint, str] = {}  # ... and back
        self._names: dict[str, frozenset[str]] = {}  # folder -> the names it held
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="seestar-watch-poll", daemon=True)

    def start(self) -> None:
        """Take the reference listing (nothing reported), then poll. Raises OSError."""
        self._list(self.root, report=False)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        failures = Repeats()
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except OSError as exc:  # the share's trouble: the supervisor sees it too
                log.debug("poll.failed", path=self.root, error=str(exc))
            except Exception as exc:  # polled again next time; said once per kind
                if failures.first(exc):
                    log.exception("poll.failed", path=self.root, error=f"{type(exc).__name__}")

    def poll(self) -> None:
        for folder in list(self._folders):
            if folder not in self._folders:
                continue  # went with a folder above it during this poll
            try:
                mtime = os.stat(folder).st_mtime_ns
            except FileNotFoundError:
                self._forget(folder)
                continue
            if mtime != self._folders[folder] or self._hot.get(folder, 0) > 0:
                self._list(folder, report=True)
        now = time.monotonic()
        for path, (_, _, changed_at) in list(self._files.items()):
            if now - changed_at < RECENT:
                try:
                    info = os.lstat(path)
                except FileNotFoundError:
                    self._drop(path)
                    continue
                self._saw(path, info, report=True)

    def _list(self, folder: str, *, report: bool) -> None:
        mtime = os.stat(folder).st_mtime_ns  # before listing: a change meanwhile shows next time
        with os.scandir(folder) as entries:
            listed = split_entries(list(entries), self.wanted)
        if repeats_an_ancestor(folder, listed.names, self._names, self.root) or (
            not self._first_holder(folder, listed.fingerprint)
        ):
            return  # another folder seen again (a link the server follows): not polled
        self._names[folder] = listed.names
        changed = False
        for subfolder in listed.subfolders:
            if self.recursive and subfolder not in self._folders and self._within(subfolder):
                self._list(subfolder, report=report)
                changed = subfolder in self._folders or changed
        present = set()
        for path, info in listed.frames:
            present.add(path)
            changed |= self._saw(path, info, report=report)
        for gone in self._in_folder.get(folder, set()) - present:
            self._drop(gone)
            changed = True
        self._in_folder[folder] = present
        self._folders[folder] = mtime
        self._hot[folder] = (
            HOT_POLLS if changed and report else max(0, self._hot.get(folder, 0) - 1)
        )

    def _first_holder(self, folder: str, fingerprint: Fingerprint | None) -> bool:
        """Whether `folder` holds what no other polled folder holds (it is not a second
        spelling of one); remembers what it holds."""
        held_by = self._holders.get(fingerprint) if fingerprint is not None else None
        if held_by is not None and held_by != folder and held_by in self._folders:
            return False
        previous = self._held.pop(folder, None)
        if previous is not None and self._holders.get(previous) == folder:
            del self._holders[previous]
        if fingerprint is not None:
            self._held[folder], self._holders[fingerprint] = fingerprint, folder
        return True

    def _within(self, folder: str) -> bool:
        """No deeper than MAX_DEPTH below the root (a folder that links to itself, as a
        share's server may show one, would be entered for ever)."""
        return os.path.relpath(folder, self.root).count(os.sep) < MAX_DEPTH

    def _saw(self, path: str, info: os.stat_result, *, report: bool) -> bool:
        """Record what `path` is now; True (and reported) when it is new or changed."""
        version = (info.st_size, info.st_mtime_ns)
        known = self._files.get(path)
        if known is not None and known[:2] == version:
            return False
        self._files[path] = (*version, time.monotonic() if report else -math.inf)
        if report:
            self.on_path(path)
        return True

    def _drop(self, path: str) -> None:
        self._files.pop(path, None)
        self._in_folder.get(os.path.dirname(path), set()).discard(path)

    def _forget(self, folder: str) -> None:
        """A folder that went away, and everything that was below it."""
        inside = folder.rstrip(os.sep) + os.sep
        for known in [f for f in self._folders if f == folder or f.startswith(inside)]:
            self._folders.pop(known, None)
            self._hot.pop(known, None)
            self._names.pop(known, None)
            for path in self._in_folder.pop(known, set()):
                self._files.pop(path, None)
            fingerprint = self._held.pop(known, None)
            if fingerprint is not None and self._holders.get(fingerprint) == known:
                del self._holders[fingerprint]
