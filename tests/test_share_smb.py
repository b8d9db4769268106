"""On a real SMB share (Samba + smbnetfs): server-side frames, outages, remounts, check-mount."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import frame_bytes, small_header, wait_for
from tests.harness import DaemonProcess, Scope, started_daemon
from tests.smbshare import SambaShare, telescope_writes

pytestmark = [pytest.mark.smb, pytest.mark.slow]


@pytest.fixture
def bed(samba: SambaShare, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scope]:
    """A Scope whose watch_path is this test's own folder on the mounted share."""
    samba.restore()
    name = request.node.name[:60].replace("[", "_").replace("]", "")
    (samba.server / "MyWorks" / name).mkdir()
    wait_for((samba.share / "MyWorks" / name).is_dir, timeout=15)
    scope = Scope(
        tmp_path,
        image_watcher={
            "watch_path": str(samba.share / "MyWorks" / name),
            "mount_point": str(samba.mount_point),
            "observer": "auto",
            "mount_retry": 0.5,
            "rescan_interval": 2,
            "poll_interval": 0.5,
            "debounce_delay": 1.0,
        },
    )
    scope.server_folder = samba.server / "MyWorks" / name  # type: ignore[attr-defined]
    yield scope
    samba.restore()


def start(scope: Scope, daemons: list[DaemonProcess], *args: str) -> DaemonProcess:
    return started_daemon(scope, daemons, *args, until="daemon.started")  # share may be away


def on_share(scope: Scope, server_path: Path) -> str:
    relative = server_path.relative_to(scope.server_folder)  # type: ignore[attr-defined]
    return str(Path(scope.settings["image_watcher"]["watch_path"]) / relative)


def test_frames_written_server_side_run_exactly_once_by_polling(
    bed: Scope, daemons: list[DaemonProcess]
) -> None:
    daemon = start(bed, daemons)
    started = daemon.wait_for_event("watcher.started")[0]
    assert started["observer"] == "polling" and "fuse.smbnetfs" in started["reason"]
    sub = bed.server_folder / "M 42_sub"  # type: ignore[attr-defined]
    frames = [
        telescope_writes(sub, "Light_M 42_10.0s_IRCUT_20240101-203001.fit"),
        telescope_writes(sub, "Light_M 42_10.0s_IRCUT_20240101-203013.fit", via_temp=True),
        telescope_writes(sub, "Light_M 42_10.0s_IRCUT_20240101-203025.fit", chunks=3),
    ]
    wait_for(lambda: len(bed.runs()) == 3, timeout=60)
    daemon.wait_for_event("scan.finished", count=4, timeout=30)
    assert daemon.stop() == 0
    assert sorted(bed.run_sources()) == sorted(on_share(bed, f) for f in frames)
    for run in bed.runs():
        assert json.loads(run["stdin"])["size_kb"] == pytest.approx(4_152_960 / 1024)


def test_server_stopped_and_started_mid_session_loses_and_duplicates_nothing(
    bed: Scope, daemons: list[DaemonProcess], samba: SambaShare
) -> None:
    daemon = start(bed, daemons)
    daemon.wait_for_event("watcher.started")  # baseline taken, watching
    sub = bed.server_folder / "NGC 7023_sub"  # type: ignore[attr-defined]
    before = telescope_writes(sub, "before.fit", chunks=2)
    wait_for(lambda: len(bed.runs()) == 1, timeout=60)

    samba.stop_server()
    daemon.wait_for_event("share.lost", timeout=30)
    during = telescope_writes(sub, "during.fit", chunks=2)  # lands on the scope's disk meanwhile
    time.sleep(2)  # the daemon sees a dead share for a while (EIO on every call)
    samba.start_server()
    daemon.wait_for_event("share.restored", timeout=60)
    after = telescope_writes(sub, "after.fit", chunks=2)
    wait_for(lambda: len(bed.runs()) == 3, timeout=60)
    daemon.wait_for_event("scan.finished", count=6, timeout=60)
    assert daemon.stop() == 0
    assert sorted(bed.run_sources()) == sorted(on_share(bed, f) for f in (before, during, after))
    status = json.loads(bed.cli("status", "--json").stdout)["counts"]
    assert status["rejected"] == 0 and status["failed"] == 0 and status["done"] == 3


def test_unmounted_and_mounted_again(
    bed: Scope, daemons: list[DaemonProcess], samba: SambaShare
) -> None:
    daemon = start(bed, daemons)
    daemon.wait_for_event("watcher.started")  # baseline taken, watching
    sub = bed.server_folder / "M 94_sub"  # type: ignore[attr-defined]
    first = telescope_writes(sub, "first.fit", chunks=2)
    wait_for(lambda: len(bed.runs()) == 1, timeout=60)
    samba.unmount()
    lost = daemon.wait_for_event("share.lost", timeout=30)
    assert "nothing is mounted" in lost[0]["reason"]
    second = telescope_writes(sub, "second.fit", chunks=2)
    samba.mount()
    daemon.wait_for_event("share.restored", timeout=30)
    daemon.wait_for_event("watcher.started", count=2)  # a fresh watcher after the remount
    wait_for(lambda: len(bed.runs()) == 2, timeout=60)
    daemon.wait_for_event("scan.finished", count=4, timeout=30)
    assert daemon.stop() == 0
    assert sorted(bed.run_sources()) == sorted(on_share(bed, f) for f in (first, second))


def test_daemon_started_before_the_share_exists(
    bed: Scope, daemons: list[DaemonProcess], samba: SambaShare
) -> None:
    samba.unmount()
    no_wait = bed.cli("run", "--no-wait")
    assert no_wait.returncode == 1 and "the share is not available" in no_wait.stderr
    daemon = start(bed, daemons)
    time.sleep(3)  # several mount_retry periods while the share is missing
    assert len(daemon.events("share.waiting")) == 1  # said once, not at every retry
    assert not daemon.events("scan.finished")  # the empty mount point is never scanned
    samba.mount()
    daemon.wait_for_event("watcher.started", timeout=30)
    frame = telescope_writes(bed.server_folder / "M 42_sub", "x.fit", chunks=2)  # type: ignore[attr-defined]
    wait_for(lambda: len(bed.runs()) == 1, timeout=60)
    assert daemon.stop() == 0
    assert bed.run_sources() == [on_share(bed, frame)]


def test_a_flapping_share_loses_nothing_duplicates_nothing_and_logs_little(
    bed: Scope, daemons: list[DaemonProcess], samba: SambaShare
) -> None:
    daemon = start(bed, daemons)
    daemon.wait_for_event("watcher.started")  # baseline taken, watching
    sub = bed.server_folder / "M 51_sub"  # type: ignore[attr-defined]
    written = []
    for i in range(6):  # ~30 s: the server drops out every few seconds, frames keep landing
        written.append(
            telescope_writes(
                sub, f"flap_{i}.fit", chunks=2, pause=0.1, content=frame_bytes(small_header())
            )
        )
        samba.stop_server()
        time.sleep(1.5)
        samba.start_server()
        time.sleep(1.5)
    wait_for(lambda: len(bed.runs()) == len(written), timeout=90)
    daemon.wait_for_event("scan.finished", count=3, timeout=60)
    assert daemon.stop() == 0
    assert sorted(bed.run_sources()) == sorted(on_share(bed, f) for f in written)
    share_lines = [e for e in daemon.logs() if str(e.get("event", "")).startswith("share.")]
    assert len(share_lines) <= 8, [e["event"] for e in share_lines]
    counts = json.loads(bed.cli("status", "--json").stdout)["counts"]
    assert counts["rejected"] == 0 and counts["failed"] == 0


def check_mount(scope: Scope, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return scope.cli("check-mount", *args, timeout=timeout)


def test_check_mount_on_a_healthy_share(bed: Scope) -> None:
    sub = bed.server_folder / "M 42_sub"  # type: ignore[attr-defined]
    sub.mkdir()
    for i in range(3):
        (sub / f"Light_{i}.fit").write_bytes(frame_bytes(small_header()))
        (sub / f"Light_{i}.jpg").write_bytes(b"jpg")
    result = check_mount(bed, "--json")
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["ready"] is True
    assert report["mount"]["fstype"] == "fuse.smbnetfs"
    assert report["frames"] == 3 and report["targets"] == 1
    assert report["observer"] == "polling"
    assert report["latency_ms"] is not None
    text = check_mount(bed)
    assert text.returncode == 0 and text.stdout.strip().endswith("ready")


def test_check_mount_on_a_missing_path(bed: Scope) -> None:
    bed.update(image_watcher={"watch_path": bed.settings["image_watcher"]["watch_path"] + "/nope"})
    result = check_mount(bed)
    assert result.returncode == 1
    assert "does not exist" in result.stdout and "NOT READY" in result.stdout


def test_check_mount_on_an_unmounted_mount_point(bed: Scope, samba: SambaShare) -> None:
    samba.unmount()
    result = check_mount(bed, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    mounted = next(c for c in report["checks"] if c["name"] == "mounted")
    assert mounted["status"] == "fail" and "nothing is mounted" in mounted["detail"]
    assert "mount -t cifs '//seestar.local/EMMC Images'" in mounted["fix"]


def test_check_mount_on_a_dead_server(bed: Scope, samba: SambaShare) -> None:
    samba.stop_server()
    wait_for(lambda: not _lists(Path(bed.settings["image_watcher"]["watch_path"])), timeout=20)
    result = check_mount(bed, "--timeout", "5")
    assert result.returncode == 1
    assert "fail    answers" in result.stdout


def test_check_mount_on_a_hung_server_answers_within_the_timeout(
    bed: Scope, samba: SambaShare
) -> None:
    samba.freeze_server()
    try:
        started = time.monotonic()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "seestar_watch",
                "check-mount",
                "-c",
                str(bed.config_path),
                "--timeout",
                "3",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        elapsed = time.monotonic() - started
    finally:
        samba.thaw_server()
    assert result.returncode == 1
    assert "no answer within" in result.stdout
    assert elapsed < 3 + 1 + 1.5  # timeout + a second, plus the interpreter's own start


def _lists(path: Path) -> bool:
    try:
        os.listdir(path)
    except OSError:
        return False
    return True
