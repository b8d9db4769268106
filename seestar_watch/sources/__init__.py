"""Sources: where frames come from, and everything above them asks nothing else.

A source lists frames (relative path, size, modification time) without following
links, says what one path is now, opens a frame for bounded reading, tells whether
it is available, and reports "something happened to this path" through one
callable. The local folder (watchdog events or polling, and the mount table) is
the first kind; nothing above a source assumes a local path: the header reader,
the settle step and the archive copy read through it.

The types a source produces live here: `Version` (a frame as a listing sees it and as the
ledger records it), `Stamp` (what tells two versions apart), `ShareState` (is it there?).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, NamedTuple, Protocol

from seestar_watch.sources.mounts import Mount

if TYPE_CHECKING:
    from seestar_watch.config import ObserverKind, WatcherConfig
    from seestar_watch.sources.smburl import SmbUrl

OnChange = Callable[[str], object]  # a relative path something happened to
FITS_SUFFIXES = (".fits", ".fit")
# Folders entered below the watched one. The Seestar's tree is 2 deep (MyWorks/<target>_sub/);
# a link on the server's disk that the server follows (Samba does) looks like a plain folder,
# and `MyWorks/loop -> .` would be entered for ever.
MAX_DEPTH = 8


def is_fits_name(name: str) -> bool:
    return name.lower().endswith(FITS_SUFFIXES)


def name_problem(name: str) -> str | None:
    """Why a file or folder name from the share cannot be one step of a frame's path, or
    None. A server sends names as they are on its disk: `..\\..\\evil.fit` (impacket) would
    step out of the watched folder once joined with the separator, and `...` or an empty
    name would be the same folder again."""
    if not name.strip("."):
        return "empty, or only dots"
    if any(c in name for c in "/\\\0"):
        return "a path separator or NUL in the name"
    return None


def frame_filter(ignore: Iterable[str]) -> Callable[[str], bool]:
    """A test on a file *name*: a FITS name that no ignore pattern matches (case-sensitive),
    and that can be a step of a path (name_problem)."""
    patterns = tuple(ignore)

    def wanted(name: str) -> bool:
        return (
            is_fits_name(name)
            and name_problem(name) is None
            and not any(fnmatch.fnmatchcase(name, p) for p in patterns)
        )

    return wanted


# The ledger keeps a version's size and time in SQLite's 64-bit INTEGER: in nanoseconds
# that is the years 1677 to 2262. A guest can give a file any time (SMB SET_INFO, `touch
# -d 2300-01-01` on a mount) and a hostile server any size (negative ones too).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NS_PER_YEAR = 365.2425 * 86400 * 1e9


class Stamp(NamedTuple):
    """What tells two versions of one path apart: its size and modification time. A plain
    tuple underneath, so it compares and unpacks as `(size, mtime_ns)` did."""

    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Version:
    """One version of a frame, as a listing or a look at one path sees it and as the ledger
    records it: its path below the source's root, size and modification time. The path is
    text; a name that is not UTF-8 keeps its bytes as surrogate escapes (os.fsdecode), so it
    round-trips exactly into the ledger, which stores the bytes (`key`)."""

    relpath: str
    size: int
    mtime_ns: int

    @property
    def stamp(self) -> Stamp:
        return Stamp(self.size, self.mtime_ns)

    @property
    def problem(self) -> str | None:
        """Why this cannot be a frame's version (a time or size out of range), or None."""
        if not 0 <= self.size <= INT64_MAX:
            return f"the server gives its size as {self.size} bytes"
        if not INT64_MIN <= self.mtime_ns <= INT64_MAX:
            year = 1970 + self.mtime_ns / NS_PER_YEAR
            return (
                f"its modification time is in the year {year:.0f}, outside the years 1677"
                " to 2262 that can be recorded (its time was set by hand or by a guest)"
            )
        return None

    @property
    def key(self) -> tuple[bytes, int, int]:
        """(relpath as bytes, size, mtime_ns) as the ledger stores them: clamped into 64
        bits, so a version out of range is still recorded (rejected) and found again."""
        return os.fsencode(self.relpath), _int64(self.size), _int64(self.mtime_ns)


def _int64(value: int) -> int:
    return min(max(value, INT64_MIN), INT64_MAX)


class Availability(Enum):
    AVAILABLE = "available"
    MISSING = "missing"  # not mounted, or the folder does not exist
    UNAVAILABLE = "unavailable"  # there, but errors or no answer


@dataclass(frozen=True)
class ShareState:
    availability: Availability
    reason: str
    mount: Mount | None = None
    latency: float | None = None  # seconds a bounded look at the folder took

    @property
    def is_available(self) -> bool:
        return self.availability is Availability.AVAILABLE


class OpenFrame(Protocol):
    """A frame opened read-only: read it in bounded pieces, ask whether it changed."""

    size: int  # when it was opened
    mtime_ns: int

    def read(self, count: int) -> bytes:
        """Up to `count` bytes (fewer only at the end of the file). Raises OSError."""

    def read_at(self, offset: int, count: int) -> bytes:
        """Up to `count` bytes from `offset`, leaving the sequential position alone."""

    def changed(self) -> bool:
        """Whether the frame's size or modification time moved since it was opened."""

    def close(self) -> None: ...

    def __enter__(self) -> OpenFrame: ...

    def __exit__(self, *exc: object) -> None: ...


class Source(Protocol):
    """Where frames come from. Errors are OSErrors: an errno in errors.SHARE_ERRNOS means
    the share is unavailable (never that a frame is gone or bad)."""

    location: str  # the watched folder as a person writes it (a path or a URL)
    wanted: Callable[[str], bool]  # the file names that are frames (FITS, not ignored)

    @property
    def observer_used(self) -> str | None:
        """How changes are heard, once watching."""

    def path_of(self, relpath: str) -> str:
        """The frame as the user knows it: `{source}` and the event's `source`."""

    def relpath_of(self, path: str) -> str | None:
        """The inverse of path_of; None when `path` lies outside the source."""

    def list_frames(self) -> Iterator[Version]:
        """Every regular file with a wanted name; raises OSError rather than half a list."""

    def stat(self, relpath: str) -> Version | None:
        """What `relpath` is now: a regular file, or None (a folder, a link, a FIFO...).
        Raises FileNotFoundError when it is gone."""

    def open(self, relpath: str) -> OpenFrame:
        """Open a regular file for reading without following links or blocking."""

    def check(self, timeout: float) -> ShareState:
        """Is the source there and answering? Never blocks beyond `timeout`."""

    def watch(self, on_change: OnChange) -> bool:
        """Start reporting changes; False (and an ERROR log) when it cannot."""

    def unwatch(self, timeout: float) -> None:
        """Stop reporting changes, waiting at most `timeout` seconds."""

    def folders_with_frames(self) -> list[str]:
        """Sub-folders one level down that hold frames (what recursive: false misses)."""


def open_source(config: WatcherConfig) -> Source:
    """The source `image_watcher` describes."""
    return source_at(
        config.watch_path,
        recursive=config.recursive,
        ignore=config.ignore,
        observer=config.observer,
        poll_interval=config.poll_interval,
        mount_point=config.mount_point,
        smb_timeout=config.smb_timeout,
    )


def source_at(
    location: str | os.PathLike[str] | SmbUrl,
    *,
    recursive: bool,
    ignore: tuple[str, ...],
    observer: ObserverKind,
    poll_interval: float,
    mount_point: str | os.PathLike[str] | None = None,
    smb_timeout: float = 10.0,
) -> Source:
    """A local folder, or an SMB share's folder read with no mount (an SmbUrl)."""
    from seestar_watch.sources.local import LocalSource
    from seestar_watch.sources.smburl import SmbUrl

    if isinstance(location, SmbUrl):
        from seestar_watch.sources.smb import SmbSource  # smbprotocol: only when used

        return SmbSource(
            location,
            recursive=recursive,
            ignore=ignore,
            observer=observer,
            poll_interval=poll_interval,
            timeout=smb_timeout,
        )
    return LocalSource(
        location,
        recursive=recursive,
        ignore=ignore,
        observer=observer,
        poll_interval=poll_interval,
        mount_point=mount_point,
    )
