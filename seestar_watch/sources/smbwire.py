"""What a server's bytes say: directory entries and change notifications, read by hand.

Everything here comes from the server, and a server on a guest network can send anything:
every offset and length is checked against the answer it lies in, and an answer that
breaks the protocol is an OSError(EPROTO), never another exception, a loop or a crash.
Names are decoded keeping a lone UTF-16 surrogate (Samba sends one for a name stored as
CESU-8 on its disk) so that one bad name is skipped, not the whole folder.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator
from typing import NamedTuple

from smbprotocol.file_info import FileAttributes
from smbprotocol.structure import DateTimeField

from seestar_watch.sources import name_problem

REPARSE = FileAttributes.FILE_ATTRIBUTE_REPARSE_POINT
DIRECTORY = FileAttributes.FILE_ATTRIBUTE_DIRECTORY

# FILE_ID_FULL_DIR_INFORMATION (MS-FSCC 2.4.18), read with struct: smbprotocol's own
# parser costs about 60 us an entry, and a rescan of 2,000 frames and their jpg twins is
# 4,000 entries (a quarter of a CPU second, every rescan_interval).
_ENTRY = struct.Struct("<II8x8xq8xq8xIII4xQ")  # next, index, mtime, size, attributes, name, ea, id
# FILE_NOTIFY_INFORMATION (MS-FSCC 2.7.1)
_CHANGE = struct.Struct("<III")  # next, action, name length
# characters a Windows client never sees in a name: Samba shows a name holding one (or
# ending in a space or a dot) under a made-up 8.3 name in listings
_NOT_WINDOWS = frozenset('\\/:*?"<>|') | frozenset(map(chr, range(32)))


class Listed(NamedTuple):
    """One entry of a folder as the server lists it."""

    name: str
    is_folder: bool
    size: int
    mtime_ns: int
    file_id: int  # the server's id of the file or folder (0 when it gives none)


def malformed(what: str) -> OSError:
    """A server's answer that breaks the protocol: a failed call, never a crash."""
    return OSError(errno.EPROTO, f"a malformed answer from the server: {what}")


def parse_entries(buffer: bytes) -> Iterator[Listed]:
    """The entries of one QUERY_DIRECTORY answer (`.` and `..` included); reparse points
    (links) are left out, as a local listing never follows a symlink."""
    offset, end = 0, len(buffer)
    while offset < end:
        if offset + _ENTRY.size > end:
            raise malformed("an entry shorter than its fixed part")
        following, _, write_time, size, attributes, length, _, file_id = _ENTRY.unpack_from(
            buffer, offset
        )
        start = offset + _ENTRY.size
        if length % 2 or start + length > end:
            raise malformed("a name that does not fit its entry")
        if following and (following < _ENTRY.size + length or offset + following >= end):
            raise malformed("an entry that points outside the answer")
        if not attributes & REPARSE:
            name = buffer[start : start + length].decode("utf-16-le", "surrogatepass")
            mtime_ns = (write_time - DateTimeField.EPOCH_FILETIME) * 100
            yield Listed(name, bool(attributes & DIRECTORY), size, mtime_ns, file_id)
        if not following:
            return
        offset += following


def parse_changes(buffer: bytes) -> list[tuple[int, str]]:
    """(action, name) of each change in one CHANGE_NOTIFY answer."""
    changes = []
    offset, end = 0, len(buffer)
    while offset < end:
        if offset + _CHANGE.size > end:
            raise malformed("a change shorter than its fixed part")
        following, action, length = _CHANGE.unpack_from(buffer, offset)
        start = offset + _CHANGE.size
        if length % 2 or start + length > end:
            raise malformed("a changed name that does not fit its entry")
        if following and (following < _CHANGE.size + length or offset + following >= end):
            raise malformed("a change that points outside the answer")
        changes.append(
            (action, buffer[start : start + length].decode("utf-16-le", "surrogatepass"))
        )
        if not following:
            break
        offset += following
    return changes


def has_surrogate(name: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in name)


def unusable(name: str) -> str | None:
    """Why a listed name is skipped (name_problem, or not valid UTF-16), or None."""
    if has_surrogate(name):
        return "not valid UTF-16 (a lone surrogate)"
    return name_problem(name)


def spelled_as_listed(name: str) -> bool:
    """Whether a listing spells `name` as a notification does: a name Windows allows. Any
    other (`M:42_sub`, `   `) is listed by Samba under a made-up 8.3 name."""
    return (
        unusable(name) is None
        and not name.endswith((" ", "."))
        and not any(c in _NOT_WINDOWS for c in name)
    )
