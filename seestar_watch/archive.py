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
import hashlib
import os
import re
import shutil
import threading
from pathlib import Path

from seestar_watch.errors import SHARE_ERRNOS
from seestar_watch.sources import OpenFrame, Source, Version

CHUNK = 1 << 20
HEADER_BYTES = 2 * 2880  # a Seestar header: read again after the copy and compared
LAST_BLOCK = 2880
# the daemon's own temporaries: .seestar-watch.<pid>.<thread>.partial
TEMPORARY = re.compile(r"\.seestar-watch\.(\d+)\.\d+\.partial")


class ArchiveError(Exception):
    """The copy could not be made now (local disk full, permissions...): try again later."""


class SourceChanged(ArchiveError):
    """The frame on the share is not the version that settled: gone, replaced or still growing."""


class ShareUnavailable(ArchiveError):
    """The share answered with an I/O error: nothing is known about the frame."""


class LowSpace(ArchiveError):
    """The copy would leave the archive's disk with less than archive.min_free_mb: the
    frame waits until there is room (it is not the frame's fault)."""


def require_room(root: Path, size: int, min_free_mb: float) -> None:
    """Raise LowSpace when a copy of `size` bytes would leave less than `min_free_mb` MB
    free on the archive's disk (0: no floor); ArchiveError when the archive cannot be made."""
    if min_free_mb <= 0:
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
    except OSError as exc:
        raise ArchiveError(f"cannot use the archive {root}: {exc.strerror}") from None
    if free - size < min_free_mb * 1e6:
        raise LowSpace(
            f"the archive's disk ({root}) has {free / 1e6:,.0f} MB free: a {size / 1e6:.1f} MB"
            f" copy would leave less than archive.min_free_mb ({min_free_mb:g} MB); frames"
            " wait until there is room"
        )


def archive_copy(source: Source, relpath: str, root: Path, version: Version) -> Path:
    """Copy the frame at `relpath` of `source` to `root/relpath`; where the copy is."""
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
        _copy_checked(source, relpath, temporary, version)
        return _place(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def remove_leftovers(root: Path) -> list[Path]:
    """Remove the temporaries a copy cut off by a power cut or a SIGKILL left in the archive
    (only the daemon's own names, only below `root`, never one of a process still alive);
    the copy is simply made again. Returns what was removed."""
    removed = []
    for folder, _, names in os.walk(root):
        for name in names:
            match = TEMPORARY.fullmatch(name)
            if match is None or _alive(int(match.group(1))):
                continue
            path = Path(folder) / name
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: leave its files alone
    return True


def _copy_checked(source: Source, relpath: str, temporary: Path, version: Version) -> None:
    """Copy the frame through its source; it must be `version` before and after the copy."""
    try:
        with source.open(relpath) as frame:
            _check_version(frame, version)
            copied = _copy_into(frame, temporary)
            if frame.changed():
                raise SourceChanged("changed while it was copied (a newer version will follow)")
    except OSError as exc:
        raise _source_error(exc) from None
    if copied != version.size:
        raise SourceChanged(f"read {copied} bytes, expected {version.size}")
    _compare_again(source, relpath, temporary, version)


def _compare_again(source: Source, relpath: str, copy: Path, version: Version) -> None:
    """Read the header blocks and the last block from the source once more, through a new
    open (a FUSE or cifs mount's caches are dropped on open), and compare them with the
    copy: a frame rewritten in place with its modification time put back has the same size
    and time, but not the same bytes."""
    places = [(0, min(version.size, HEADER_BYTES))]
    if version.size > HEADER_BYTES:
        places.append((version.size - min(version.size, LAST_BLOCK), LAST_BLOCK))
    try:
        with source.open(relpath) as frame, copy.open("rb") as copied:
            _check_version(frame, version)
            for offset, count in places:
                copied.seek(offset)
                if frame.read_at(offset, count) != copied.read(count):
                    raise SourceChanged(
                        "rewritten while it was copied (its time was put back): not the"
                        " version that settled; a newer one will follow"
                    )
    except OSError as exc:
        raise _source_error(exc) from None


def _copy_into(frame: OpenFrame, temporary: Path) -> int:
    """Copy the open frame into a new file; local write errors are ArchiveErrors."""
    try:
        out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ArchiveError(f"cannot write {temporary.parent}: {exc.strerror}") from None
    copied = 0
    try:
        while chunk := frame.read(CHUNK):
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


def _check_version(frame: OpenFrame, version: Version) -> None:
    if (frame.size, frame.mtime_ns) != (version.size, version.mtime_ns):
        raise SourceChanged("changed since it settled (a newer version will follow)")


def _source_error(exc: OSError) -> ArchiveError:
    if exc.errno in SHARE_ERRNOS:
        return ShareUnavailable(os.strerror(exc.errno or 0))
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
        return SourceChanged("gone from the share before it could be copied")
    if exc.errno == errno.EINVAL:
        return SourceChanged("no longer a regular file")
    return ArchiveError(f"cannot read the frame: {exc.strerror}")


def _place(temporary: Path, destination: Path) -> Path:
    """Give the checked copy its name; an existing identical file is reused, a different
    one is never replaced: the copy gets the next free name `<stem>.v2<suffix>`, ..."""
    for n in range(1, 10_000):
        candidate = destination if n == 1 else versioned(destination, n)
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


def versioned(destination: Path, n: int) -> Path:
    """`<stem>.v<n><suffix>`, shortened when that is longer than the file system allows: a
    frame name of 255 bytes must still get a second version. The extension is kept, and
    as much of the name as fits, then `~` and a hash of the whole name, so the short name
    is the same every time and says which frame it is (the ledger records it too)."""
    name = f"{destination.stem}.v{n}{destination.suffix}"
    limit = _name_max(destination.parent)
    if len(os.fsencode(name)) <= limit:
        return destination.with_name(name)
    digest = hashlib.sha256(os.fsencode(destination.name)).hexdigest()[:8]
    tail = f"~{digest}.v{n}{destination.suffix}"
    stem = destination.stem
    while stem and len(os.fsencode(stem + tail)) > limit:
        stem = stem[:-1]
    return destination.with_name(stem + tail)


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
