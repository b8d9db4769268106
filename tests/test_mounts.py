"""Mount tables on recorded samples of Linux and macOS, and the observer `auto` picks from them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from seestar_watch.sources.mounts import (
    choose_observer,
    mount_containing,
    mounts_from_partitions,
    not_mounted_reason,
    parse_mountinfo,
    read_mount_table,
)
from tests.conftest import DATA

LINUX = parse_mountinfo((DATA / "mounts" / "linux-mountinfo.txt").read_text())
MACOS = mounts_from_partitions(
    SimpleNamespace(**record)
    for record in json.loads((DATA / "mounts" / "macos-partitions.json").read_text())
)


def test_mountinfo_fields_and_escaped_spaces() -> None:
    share = next(m for m in LINUX if m.mount_point == "/mnt/seestar")
    assert share.fstype == "cifs"
    assert share.source == "//seestar.local/EMMC Images"
    assert share.is_read_only and share.is_network
    home = next(m for m in LINUX if m.fstype == "smb3")
    assert home.mount_point == "/home/ann/Seestar Share"


@pytest.mark.parametrize(
    ("path", "mount_point", "network"),
    [
        ("/mnt/seestar/MyWorks/M 42_sub", "/mnt/seestar", True),
        ("/tmp/seestar-smb/mnt/127.0.0.1/EMMC Images/MyWorks", "/tmp/seestar-smb/mnt", True),
        ("/tmp/other", "/tmp", False),
        ("/media/usb/frames", "/media/usb", False),  # fuseblk is a local disk
        ("/home/ann/Seestar Share/MyWorks", "/home/ann/Seestar Share", True),
        ("/home/ann/Seestar Sharex", "/", False),  # a prefix of the name is not inside it
        ("/srv/nas/astro", "/srv/nas", True),
        ("/mnt", "/", False),
    ],
)
def test_longest_mount_point_wins(path: str, mount_point: str, network: bool) -> None:
    mount = mount_containing(path, LINUX)
    assert mount is not None
    assert mount.mount_point == mount_point
    assert mount.is_network is network


def test_garbage_lines_are_skipped() -> None:
    assert parse_mountinfo("nonsense\n\n1 2 3\n") == []


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/mnt/seestar/MyWorks", "polling"),
        ("/tmp/seestar-smb/mnt/127.0.0.1/EMMC Images/MyWorks", "polling"),
        ("/home/ann/photos", "native"),
    ],
)
def test_auto_polls_on_cifs_and_fuse_from_a_linux_sample(path: str, expected: str) -> None:
    kind, reason = choose_observer("auto", path, LINUX)
    assert kind == expected
    assert reason


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/Volumes/EMMC Images/MyWorks", "polling"),
        ("/Users/ann/Seestar/MyWorks", "polling"),
        ("/Users/ann/Pictures", "native"),
    ],
)
def test_auto_polls_on_smbfs_from_a_macos_sample(path: str, expected: str) -> None:
    assert choose_observer("auto", path, MACOS)[0] == expected


def test_macos_read_only_flag_and_source() -> None:
    mount = mount_containing("/Users/ann/Seestar/x", MACOS)
    assert mount is not None and mount.is_read_only and mount.fstype == "smbfs"


@pytest.mark.parametrize("kind", ["native", "polling"])
def test_explicit_observer_is_kept(kind: str) -> None:
    assert choose_observer(kind, "/mnt/seestar", LINUX) == (kind, "configured")  # type: ignore[arg-type]


def test_auto_without_a_mount_table_is_native() -> None:
    assert choose_observer("auto", "/anything", [])[0] == "native"


def test_this_machines_mount_table_reads() -> None:
    mounts = read_mount_table()
    assert mount_containing("/", mounts) is not None


def test_a_mount_point_inside_a_fuse_mount_names_the_mount_to_use() -> None:
    # smbnetfs mounts the network at one point and shows each host as a folder inside it
    reason = not_mounted_reason("/tmp/seestar-smb/mnt/127.0.0.1", LINUX)
    assert "it is a folder inside the fuse.smbnetfs mount at /tmp/seestar-smb/mnt" in reason
    assert reason.endswith("set image_watcher.mount_point: /tmp/seestar-smb/mnt")
    mac = not_mounted_reason("/Volumes/EMMC Images/MyWorks", MACOS)
    assert mac.endswith("set image_watcher.mount_point: /Volumes/EMMC Images")
    assert not_mounted_reason("/mnt/elsewhere", LINUX) == "nothing is mounted at /mnt/elsewhere"
