"""Share state without blocking: single-flight probes, mount-point rules, flapping, fix commands."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from seestar_watch.config import parse_config
from seestar_watch.errors import ConfigError
from seestar_watch.share import FLAP_LIMIT, ShareSupervisor
from seestar_watch.sources import Availability, ShareState
from seestar_watch.sources.bounded import ProbeTimeout, SingleFlight
from seestar_watch.sources.local import LocalSource
from seestar_watch.sources.mountcheck import check_mount, mount_command, remount_read_only
from tests.conftest import events_named, write_frame


def watcher_config(watch: Path, **extra: Any) -> Any:
    raw = {"image_watcher": {"watch_path": str(watch), **extra}, "pipeline": {"command": ["x"]}}
    return parse_config(raw, Path("c.yaml")).image_watcher


def check_share(config: Any) -> ShareState:
    return LocalSource(config.watch_path, mount_point=config.mount_point).check(10)


class Told:
    """A share listener that hands each change to a callable."""

    def __init__(self, on_up: Any, on_down: Any) -> None:
        self.share_up, self.share_down = on_up, on_down


def supervisor_of(config: Any, on_up: Any, on_down: Any) -> ShareSupervisor:
    source = LocalSource(config.watch_path, mount_point=config.mount_point)
    return ShareSupervisor(source, config.mount_retry, threading.Event(), [Told(on_up, on_down)])


def test_a_stuck_probe_holds_one_thread_and_later_calls_do_not_pile_up(tmp_path: Path) -> None:
    fifo = tmp_path / "never"
    os.mkfifo(fifo)  # opening a FIFO with no writer blocks for real, like a dead hard mount
    prober = SingleFlight("test-probe")
    before = threading.active_count()
    for _ in range(5):
        with pytest.raises(ProbeTimeout):
            prober.call(lambda: os.close(os.open(fifo, os.O_RDONLY)), timeout=0.2)
    assert threading.active_count() == before + 1
    with open(fifo, "wb"):  # let the stuck call finish
        pass


def test_probe_results_and_errors_come_back(tmp_path: Path) -> None:
    prober = SingleFlight("test-probe")
    assert prober.call(lambda: 42, timeout=5) == 42
    with pytest.raises(FileNotFoundError):
        prober.call(lambda: os.stat(tmp_path / "missing"), timeout=5)


def test_a_mount_point_with_nothing_mounted_is_missing_and_never_looked_into(
    tmp_path: Path,
) -> None:
    point = tmp_path / "mnt"
    write_frame(point / "MyWorks" / "stale.fit")  # an empty-looking local folder must not count
    config = watcher_config(point / "MyWorks", mount_point=str(point))
    state = check_share(config)
    assert state.availability is Availability.MISSING
    assert state.reason == f"nothing is mounted at {point}"


def test_a_local_folder_without_mount_point_is_available(tmp_path: Path) -> None:
    state = check_share(watcher_config(tmp_path))
    assert state.is_available and state.latency is not None


def test_a_missing_watch_path_is_missing(tmp_path: Path) -> None:
    state = check_share(watcher_config(tmp_path / "gone"))
    assert state.availability is Availability.MISSING and "does not exist" in state.reason


def test_watch_path_outside_mount_point_is_a_config_error() -> None:
    raw = {
        "image_watcher": {"watch_path": "/home/ann/frames", "mount_point": "/mnt/seestar"},
        "pipeline": {"command": ["x"]},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, Path("c.yaml"))
    assert "is not inside image_watcher.mount_point (/mnt/seestar)" in caught.value.problems[0]


def test_a_flapping_share_logs_a_bounded_number_of_lines(
    tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    ups, downs = [], []
    supervisor = supervisor_of(watcher_config(tmp_path), ups.append, downs.append)
    up = ShareState(Availability.AVAILABLE, "", None)
    down = ShareState(Availability.UNAVAILABLE, "Input/output error", None)
    for _ in range(100):
        supervisor._apply(up)
        supervisor._apply(down)
    assert len(ups) == 100 and len(downs) == 100  # every transition is still acted on
    share_lines = [e for e in logs if e["event"].startswith("share.")]
    assert len(share_lines) <= FLAP_LIMIT
    assert len(events_named(logs, "share.flapping")) == 1


def test_waiting_is_said_once(tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    supervisor = supervisor_of(watcher_config(tmp_path), lambda s: None, lambda s: None)
    missing = ShareState(Availability.MISSING, "nothing is mounted at /mnt/seestar", None)
    for _ in range(10):
        supervisor._apply(missing)
    assert len(events_named(logs, "share.waiting")) == 1


def test_fix_commands_for_each_system() -> None:
    linux = mount_command("/mnt/seestar", "linux")
    assert linux.startswith("sudo mkdir -p /mnt/seestar && sudo mount -t cifs")
    assert "'//seestar.local/EMMC Images'" in linux
    for option in ("guest", "ro", "soft", "echo_interval=10", "vers=3.0", "nofail"):
        assert option in linux.split(" -o ")[1].split(",")
    mac = mount_command("/Users/ann/Seestar", "darwin")
    assert "mount_smbfs -o soft,nobrowse '//guest:@seestar.local/EMMC%20Images'" in mac
    assert remount_read_only("/mnt/seestar", "linux") == "sudo mount -o remount,ro /mnt/seestar"
    assert "rdonly" in remount_read_only("/Users/ann/Seestar", "darwin")


def test_check_mount_on_a_local_folder_warns_that_it_may_not_be_the_share(tmp_path: Path) -> None:
    write_frame(tmp_path / "MyWorks" / "M 42_sub" / "a.fit")
    report = check_mount(watcher_config(tmp_path / "MyWorks", recursive=True), 5, "linux")
    statuses = {check.name: check.status for check in report.checks}
    assert statuses["mounted"] == "warning"
    assert statuses["watch_path"] == statuses["answers"] == statuses["readable"] == "ok"
    assert report.ready and report.frames == 1 and report.targets == 1
    assert report.observer == "native"


def test_check_mount_warns_when_frames_sit_in_folders_that_are_not_watched(
    tmp_path: Path,
) -> None:
    write_frame(tmp_path / "MyWorks" / "M 42_sub" / "a.fit")
    write_frame(tmp_path / "MyWorks" / "M 42_sub" / "b.fit")
    report = check_mount(watcher_config(tmp_path / "MyWorks", recursive=False), 5, "linux")
    checks = {check.name: check for check in report.checks}
    assert checks["readable"].detail == "2 FITS frames in 1 folder"
    assert checks["recursive"].status == "warning"
    assert "2 FITS frames in sub-folders" in checks["recursive"].detail
    assert checks["recursive"].fix == "set image_watcher.recursive: true in the config"
    watched = check_mount(watcher_config(tmp_path / "MyWorks", recursive=True), 5, "linux")
    assert "recursive" not in {check.name for check in watched.checks}


def test_check_mount_with_nothing_at_the_mount_point(tmp_path: Path) -> None:
    (tmp_path / "mnt" / "MyWorks").mkdir(parents=True)
    config = watcher_config(tmp_path / "mnt" / "MyWorks", mount_point=str(tmp_path / "mnt"))
    report = check_mount(config, 5, "darwin")
    assert not report.ready
    mounted = report.checks[0]
    assert mounted.status == "fail" and mounted.fix and "mount_smbfs" in mounted.fix
    assert report.frames is None  # the empty folder was not counted


def test_two_real_outages_within_a_minute_are_each_said(
    tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    supervisor = supervisor_of(watcher_config(tmp_path), lambda s: None, lambda s: None)
    up = ShareState(Availability.AVAILABLE, "", None)
    down = ShareState(Availability.UNAVAILABLE, "Input/output error", None)
    for state in (up, down, up, down, up):
        supervisor._apply(state)
    assert len(events_named(logs, "share.lost")) == 2
    assert len(events_named(logs, "share.restored")) == 2
    assert events_named(logs, "share.flapping") == []
