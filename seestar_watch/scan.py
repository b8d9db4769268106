"""Listing the watched tree: the catch-up at start and the periodic rescans.

Events give low latency; scans make correctness independent of them (missed or
overflowed inotify events, coalesced FSEvents, files present at start, watchdog
#1077). Only folders and FITS names are looked at; symlinks are never followed.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable, Iterable, Iterator

from seestar_watch.errors import SHARE_ERRNOS
from seestar_watch.ledger import Version

FITS_SUFFIXES = (".fits", ".fit")


def is_fits_name(name: str) -> bool:
    return name.lower().endswith(FITS_SUFFIXES)


def frame_filter(ignore: Iterable[str]) -> Callable[[str], bool]:
    """A test on a file *name*: a FITS name that no ignore pattern matches (case-sensitive)."""
    patterns = tuple(ignore)

    def wanted(name: str) -> bool:
        return is_fits_name(name) and not any(fnmatch.fnmatchcase(name, p) for p in patterns)

    return wanted


def list_frames(
    root: str, *, recursive: bool, wanted: Callable[[str], bool]
) -> Iterator[tuple[str, os.stat_result]]:
    """(path, lstat) of every regular file under `root` whose name is wanted.

    A sub-folder that vanished or cannot be read is skipped; an unreadable root, or an
    I/O error from the share anywhere, raises OSError (a partial listing is not the truth).
    """
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                found = list(entries)
        except OSError as exc:
            if folder == root or exc.errno in SHARE_ERRNOS:
                raise
            continue
        for entry in found:
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    folders.append(entry.path)
            elif wanted(entry.name):
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    yield entry.path, info


def version_of(root: str, path: str, size: int, mtime_ns: int) -> Version:
    return Version(os.fsencode(os.path.relpath(path, root)), size, mtime_ns)


def folders_with_frames(root: str, wanted: Callable[[str], bool], limit: int = 1000) -> list[str]:
    """Sub-folders of `root` (one level down) that hold frames: what `recursive: false` misses.

    One listing of root and one of each of its first `limit` sub-folders; raises OSError.
    """
    with os.scandir(root) as entries:
        folders = sorted(e.path for e in entries if e.is_dir(follow_symlinks=False))
    found = []
    for folder in folders[:limit]:
        try:
            with os.scandir(folder) as entries:
                if any(wanted(e.name) for e in entries):
                    found.append(folder)
        except OSError as exc:
            if exc.errno in SHARE_ERRNOS:
                raise
    return found
