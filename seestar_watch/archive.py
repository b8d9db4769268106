"""The local archive: an exact copy of each frame, made before the pipeline runs.

The pipeline works on the copy, never on the telescope's file (ASTAP `-update`
rewrites a FITS in place), and a run can finish after the share has gone. A
copy is written to a temporary name, fsynced, checked against the source and
only then given its name, without ever replacing a different file. Nothing is
ever written to the share.
"""

from __future__ import annotations

import errno
import filecmp
import os
import stat
import threading
from pathlib import Path

from seestar_watch.errors import SHARE_ERRNOS
from seestar_watch.ledger import Version

CHUNK = 1 << 20


class ArchiveError(Exception):
    """The copy could not be made now (local disk full, permissions...): try again later."""


class SourceChanged(ArchiveError):
    """The frame on the share is not the version that settled: gone, replaced or still growing."""


class ShareUnavailable(ArchiveError):
    """The share answered with an I/O error: nothing is known about the frame."""


def archive_copy(source: str, root: Path, relpath: str, version: Version) -> Path:
    """Copy `source` to `root/relpath` and return where the copy is."""
    if os.path.isabs(relpath) or os.path.normpath(relpath).split(os.sep)[0] == os.pardir:
        raise ArchiveError(f"refusing a path outside the archive: {relpath!r}")
    destination = root / relpath
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(f"cannot create {destination.parent}: {exc.strerror}") from None
    # short and per thread: a 255-byte frame name leaves no room for a suffix
    unique = f"{os.getpid()}.{threading.get_ident()}"
    temporary = destination.with_name(f".seestar-watch.{unique}.partial")
    try:
        _copy_checked(source, temporary, version)
        return _place(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def _copy_checked(source: str, temporary: Path, version: Version) -> None:
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _source_error(exc) from None
    try:
        _check_version(os.fstat(fd), version)
        copied = _copy_into(fd, temporary)
        _check_version(os.fstat(fd), version)
    except OSError as exc:
        raise _source_error(exc) from None
    finally:
        os.close(fd)
    if copied != version.size:
        raise SourceChanged(f"read {copied} bytes, expected {version.size}")


def _copy_into(fd: int, temporary: Path) -> int:
    """Copy the open source into a new file; local write errors are ArchiveErrors."""
    try:
        out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ArchiveError(f"cannot write {temporary.parent}: {exc.strerror}") from None
    copied = 0
    try:
        while chunk := os.read(fd, CHUNK):
            _write_all(out, chunk, temporary)
            copied += len(chunk)
        os.fsync(out)
    finally:
        os.close(out)
    return copied


def _write_all(out: int, chunk: bytes, temporary: Path) -> None:
    view = memoryview(chunk)
    while view:
        try:
            written = os.write(out, view)
        except OSError as exc:
            raise ArchiveError(f"cannot write {temporary.parent}: {exc.strerror}") from None
        view = view[written:]


def _check_version(info: os.stat_result, version: Version) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise SourceChanged("no longer a regular file")
    if (info.st_size, info.st_mtime_ns) != (version.size, version.mtime_ns):
        raise SourceChanged("changed since it settled (a newer version will follow)")


def _source_error(exc: OSError) -> ArchiveError:
    if exc.errno in SHARE_ERRNOS:
        return ShareUnavailable(os.strerror(exc.errno or 0))
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
        return SourceChanged("gone from the share before it could be copied")
    return ArchiveError(f"cannot read the frame: {exc.strerror}")


def _place(temporary: Path, destination: Path) -> Path:
    """Give the checked copy its name; an existing identical file is reused, a different
    one is never replaced: the copy gets the next free name `<stem>.v2<suffix>`, ..."""
    for n in range(1, 10_000):
        candidate = destination if n == 1 else destination.with_stem(f"{destination.stem}.v{n}")
        if candidate.exists():
            if filecmp.cmp(temporary, candidate, shallow=False):
                return candidate
            continue
        try:
            os.link(temporary, candidate)  # unlike rename, fails instead of replacing
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise ArchiveError(f"cannot name the copy {candidate}: {exc.strerror}") from None
            os.rename(temporary, candidate)  # a filesystem without hard links
        _fsync_folder(candidate.parent)
        return candidate
    raise ArchiveError(f"too many different versions of {destination}")


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
