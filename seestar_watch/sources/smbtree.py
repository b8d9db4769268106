"""The watched folder of an SMB share, read-only: what is in it, and how one thing is looked at.

Every read-only operation on the share's tree is written once here, for the source and for
the thread that hears its changes alike: a look at one name (never following a link), a
folder opened for its listing or its change notifications, the listing of one folder and of
the whole tree, and the difference between two listings.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import smbclient
from smbclient._io import SMBDirectoryIO
from smbprotocol.exceptions import NoMoreFiles, NoSuchFile
from smbprotocol.file_info import FileInformationClass
from smbprotocol.open import QueryDirectoryFlags, SMB2QueryDirectoryResponse

from seestar_watch.log import Repeats, get_logger
from seestar_watch.sources import MAX_DEPTH, Stamp
from seestar_watch.sources.smbconnection import SmbClient
from seestar_watch.sources.smbwire import Listed, malformed, parse_entries, unusable

log = get_logger("seestar_watch.sources.smb")

MAX_ENTRIES = 100_000  # in one folder: a Seestar folder holds a few thousand files

Listing = dict[str, Stamp]  # relpath -> the version of every frame a listing found


def changed_since(before: Mapping[str, Stamp], after: Mapping[str, Stamp]) -> list[str]:
    """The relpaths of `after` that are new since `before`, or another version."""
    return [relpath for relpath, version in after.items() if before.get(relpath) != version]


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


class SmbTree:
    """The watched folder and what is below it, read through one bounded connection."""

    def __init__(
        self,
        client: SmbClient,
        *,
        recursive: bool,
        wanted: Callable[[str], bool],
        path_of: Callable[[str], str],
    ) -> None:
        self.client = client
        self.recursive = recursive
        self.wanted = wanted
        self._path_of = path_of
        self._refused = Repeats()  # names skipped, each said once
        self.root_failures = 0  # listings of the watched folder itself that failed

    # -- one name ---------------------------------------------------------------------

    def look(self, relpath: str) -> os.stat_result:
        """What `relpath` is, its link (if it is one) not followed. Raises OSError."""
        unc = self.client.unc(relpath)
        info: os.stat_result = self.client.call(
            lambda: smbclient.stat(unc, follow_symlinks=False, **self.client.options)
        )
        return info

    def is_folder(self, relpath: str) -> bool:
        try:
            return stat.S_ISDIR(self.look(relpath).st_mode)
        except FileNotFoundError:
            return False

    def open_folder(self, relpath: str) -> Any:
        """A folder opened for its change notifications, sharing every mode. Raises OSError."""
        return self.client.call(
            lambda: smbclient.open_file(
                self.client.unc(relpath),
                mode="rb",
                share_access="rwd",
                buffering=0,
                file_type="dir",
                **self.client.options,
            )
        )

    # -- listings -----------------------------------------------------------------------

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
            if not folder:
                self.root_failures += 1
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
                folder=self._path_of(folder),
                name=name.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace"),
                reason=problem,
            )
        return problem is None

    def frames(self) -> Listing:
        """Every frame below the watched folder and its version: one directory query per
        folder (never a look per file); raises OSError rather than give half a list."""
        listing: Listing = {}
        for folder, entry, _ in self._walk():
            if not entry.is_folder and self.wanted(entry.name):
                relpath = f"{folder}/{entry.name}" if folder else entry.name
                listing[relpath] = Stamp(entry.size, entry.mtime_ns)
        return listing

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
