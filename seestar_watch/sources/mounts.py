"""What is mounted where, read from the mount table and never from the share itself.

On Linux the table is /proc/self/mountinfo (it has the real filesystem type of
FUSE mounts and escapes spaces, as in "EMMC Images"); on macOS it is the system
mount table through psutil. Both give `Mount` records, so everything above this
module is the same on both systems and is tested on recorded samples of each.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seestar_watch.config import ObserverKind

MOUNTINFO = "/proc/self/mountinfo"

# Filesystems where another machine writes the files: the local kernel sees no
# change, so inotify/FSEvents/kqueue report nothing of what the telescope writes
# (watchdog issues #409, #504, #668).
NETWORK_FSTYPES = frozenset(
    {
        "cifs",
        "smb3",
        "smbfs",
        "smb",
        "nfs",
        "nfs4",
        "9p",
        "afs",
        "davfs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "ncpfs",
        "coda",
        "virtiofs",
        "vboxsf",
        "vmhgfs",
        "webdav",
        "afpfs",
        "fuse",
    }
)
# FUSE filesystems backed by a local block device behave like local disks.
LOCAL_FUSE_FSTYPES = frozenset({"fuseblk", "fuse.ntfs-3g", "fuse.exfat", "fuse.portal"})


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str
    options: tuple[str, ...] = ()

    @property
    def is_network(self) -> bool:
        """True for network and FUSE filesystems, whose changes native events never report."""
        if self.fstype in LOCAL_FUSE_FSTYPES:
            return False
        return self.fstype in NETWORK_FSTYPES or self.fstype.startswith("fuse.")

    @property
    def is_read_only(self) -> bool:
        return "ro" in self.options or "rdonly" in self.options or "read-only" in self.options


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\040, \\011, \\012, \\134."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/self/mountinfo (proc(5)); lines that do not fit are skipped."""
    mounts = []
    for line in text.splitlines():
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        options = fields[5].split(",") + (tail[2].split(",") if len(tail) > 2 else [])
        mounts.append(Mount(_unescape(fields[4]), tail[0], _unescape(tail[1]), tuple(options)))
    return mounts


def mounts_from_partitions(partitions: Iterable[object]) -> list[Mount]:
    """Mounts from psutil.disk_partitions(all=True) records (the macOS mount table)."""
    return [
        Mount(
            str(getattr(part, "mountpoint", "")),
            str(getattr(part, "fstype", "")),
            str(getattr(part, "device", "")),
            tuple(str(getattr(part, "opts", "")).split(",")),
        )
        for part in partitions
    ]


def read_mount_table() -> list[Mount]:
    """The current mount table; empty when it cannot be read."""
    if sys.platform.startswith("linux"):
        try:
            with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as table:
                return parse_mountinfo(table.read())
        except OSError:
            return []
    import psutil

    return mounts_from_partitions(psutil.disk_partitions(all=True))


def mount_containing(path: str, mounts: Iterable[Mount]) -> Mount | None:
    """The mount whose mount point is the longest prefix of `path` (already made absolute).

    The last matching entry wins on ties: later mounts hide earlier ones on the same point.
    """
    path = os.path.normpath(path)
    best: Mount | None = None
    for mount in mounts:
        point = os.path.normpath(mount.mount_point)
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(os.path.normpath(best.mount_point))):
            best = mount
    return best


def choose_observer(kind: ObserverKind, path: str, mounts: list[Mount]) -> tuple[str, str]:
    """("native" | "polling", why) for `path`, which must already be a resolved absolute path."""
    if kind != "auto":
        return kind, "configured"
    mount = mount_containing(path, mounts)
    if mount is None:
        return "native", "no mount table entry found for the path; assuming a local disk"
    where = f"{mount.mount_point} is {mount.fstype} ({mount.source})"
    if mount.is_network:
        return "polling", f"{where}: native events never report what another machine writes"
    return "native", f"{where}: a local filesystem"


def mount_at(point: str, mounts: list[Mount]) -> Mount | None:
    """The active mount exactly at `point` (the last one: later mounts hide earlier ones)."""
    found = [m for m in mounts if os.path.normpath(m.mount_point) == os.path.normpath(point)]
    return found[-1] if found else None


def enclosing_share(point: str, mounts: list[Mount]) -> Mount | None:
    """The network or FUSE mount that `point` lies inside (not at), e.g. smbnetfs's host folder."""
    mount = mount_containing(point, mounts)
    if mount is None or not mount.is_network:
        return None
    return mount if os.path.normpath(mount.mount_point) != os.path.normpath(point) else None


def not_mounted_reason(point: str, mounts: list[Mount]) -> str:
    """Why mount_point has no mount: nothing there, or it is a folder inside another mount."""
    enclosing = enclosing_share(point, mounts)
    if enclosing is None:
        return f"nothing is mounted at {point}"
    return (
        f"nothing is mounted at {point}: it is a folder inside the {enclosing.fstype} mount at"
        f" {enclosing.mount_point}; set image_watcher.mount_point: {enclosing.mount_point}"
    )
