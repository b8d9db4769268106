"""What a guest on the telescope's Wi-Fi can leave on the share, against the real daemon on a
local folder: times and sizes out of range, sparse "frames", names that are not a path's
step, second spellings of one file, a full archive disk, and headers made to crash a report.
The same against a real SMB server is in test_hostile_smb.py.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from seestar_watch.alerts import AlertRules
from seestar_watch.config import AlertsConfig
from seestar_watch.lifecycle import Lifecycle
from seestar_watch.outcomes import Outcome
from seestar_watch.report import observed_at
from seestar_watch.sources import Version
from tests.conftest import events_named, frame_bytes, real_header, set_card, wait_for, write_frame
from tests.harness import DaemonProcess, Scope, started_daemon

YEAR_2300 = 10_413_792_000  # 2300-01-01 in unix seconds: beyond SQLite's INTEGER in ns


@pytest.fixture
def scope(tmp_path: Path) -> Scope:
    return Scope(tmp_path)


def start(scope: Scope, daemons: list[DaemonProcess], *args: str) -> DaemonProcess:
    return started_daemon(scope, daemons, *args, until="watcher.started")


def dated_2300(path: Path) -> Path:
    write_frame(path)
    os.utime(path, (YEAR_2300, YEAR_2300))
    return path


def status(scope: Scope) -> dict[str, Any]:
    done = scope.cli("status", "--json", "--limit", "50")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def reasons(scope: Scope, state: str) -> dict[str, str]:
    return {
        os.path.basename(f["source"]): f["reason"]
        for f in status(scope)["frames"]
        if f["state"] == state
    }


# -- times and sizes out of range -----------------------------------------------------------


def test_a_version_out_of_range_says_why_and_is_stored_clamped() -> None:
    late = Version("M 42_sub/x.fit", 4_152_960, YEAR_2300 * 10**9)
    assert "2300" in (late.problem or "")
    assert late.key == (b"M 42_sub/x.fit", 4_152_960, 2**63 - 1)
    assert "size" in (Version("x.fit", -1, 0).problem or "")
    assert Version("x.fit", 4_152_960, 1_700_000_000 * 10**9).problem is None


@pytest.mark.slow
def test_a_frame_dated_2300_on_a_first_start_does_not_end_the_night(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    dated_2300(scope.share / "M 42_sub" / "future.fit")  # there before the first start
    daemon = start(scope, daemons)
    daemon.wait_for_event("ledger.baseline")
    good = write_frame(scope.share / "M 42_sub" / "good.fit")
    wait_for(lambda: scope.run_sources() == [str(good)], timeout=20)
    daemon.wait_for_event("scan.finished", count=2)  # rescans go on
    assert daemon.stop() == 0
    assert not daemon.events("daemon.thread_failed")


@pytest.mark.slow
def test_a_frame_dated_2300_is_rejected_with_the_reason_and_the_next_one_runs(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    daemon = start(scope, daemons)
    dated_2300(scope.share / "M 42_sub" / "future.fit")
    wait_for(lambda: "future.fit" in reasons(scope, "rejected"), timeout=20)
    good = write_frame(scope.share / "M 42_sub" / "good.fit")
    wait_for(lambda: scope.run_sources() == [str(good)], timeout=20)
    daemon.wait_for_next("scan.finished")  # a rescan knows it: no loop, no crash
    assert daemon.stop() == 0
    assert "2300" in reasons(scope, "rejected")["future.fit"]
    assert scope.run_sources() == [str(good)]


@pytest.mark.slow
def test_run_once_with_a_frame_dated_2300_is_no_internal_error(scope: Scope) -> None:
    assert scope.cli("run", "--once").returncode == 0  # the first start's baseline
    dated_2300(scope.share / "M 42_sub" / "future.fit")
    good = write_frame(scope.share / "M 42_sub" / "good.fit")
    done = scope.cli("run", "--once")
    assert done.returncode == 0, done.stderr
    assert scope.run_sources() == [str(good)]
    assert "2300" in reasons(scope, "rejected")["future.fit"]


# -- sizes: a sparse file that promises gigabytes -----------------------------------------


def sparse_frame(path: Path, gigabytes: int = 2) -> Path:
    """A real header promising `gigabytes` GiB of data, the file truncated up to that size:
    "complete", yet a few KB on disk."""
    side = str(32768 * gigabytes // 2)
    header = set_card(set_card(real_header(), "NAXIS1", "32768"), "NAXIS2", side)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = 32768 * int(side) * 2
    with path.open("wb") as out:
        out.write(header)
        out.truncate(len(header) + -(-data // 2880) * 2880)  # whole FITS blocks
    return path


@pytest.mark.slow
def test_a_sparse_frame_promising_2_gb_is_rejected_without_being_copied(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    daemon = start(scope, daemons)
    huge = sparse_frame(scope.share / "M 42_sub" / "huge.fit")
    assert huge.stat().st_blocks * 512 < 1_000_000  # sparse: nothing on the scope's disk
    wait_for(lambda: "huge.fit" in reasons(scope, "rejected"), timeout=20)
    good = write_frame(scope.share / "M 42_sub" / "good.fit")
    wait_for(lambda: scope.run_sources() == [str(good)], timeout=20)
    assert daemon.stop() == 0
    assert "max_frame_mb" in reasons(scope, "rejected")["huge.fit"]
    assert not (scope.archive / "M 42_sub" / "huge.fit").exists()
    assert sum(f.stat().st_size for f in scope.archive.rglob("*") if f.is_file()) < 10**7


@pytest.mark.slow
def test_process_never_runs_a_frame_above_max_frame_mb_not_even_forced(scope: Scope) -> None:
    huge = sparse_frame(scope.share / "M 42_sub" / "huge.fit")
    done = scope.cli("process", "--force", str(huge))
    assert done.returncode == 1
    assert done.stdout.startswith("rejected") and "max_frame_mb" in done.stdout
    assert scope.runs() == []


@pytest.mark.slow
def test_frames_wait_for_room_in_the_archive_instead_of_failing(
    tmp_path: Path, tmpfs: Any, daemons: list[DaemonProcess]
) -> None:
    archive = tmpfs("archive", "size=24m")
    scope = Scope(tmp_path, archive={"path": str(archive), "min_free_mb": 12})
    filler = archive / "filler"
    filler.write_bytes(bytes(10_000_000))  # 14 MB left: a 4 MB copy would leave 10
    daemon = start(scope, daemons)
    frames = [
        write_frame(scope.share / "M 42_sub" / f"f{n}.fit", frame_bytes(real_header()))
        for n in range(2)
    ]
    (said,) = daemon.wait_for_event("archive.low_space")
    assert "min_free_mb" in said["reason"]
    daemon.wait_for_next("scan.finished")
    counts = status(scope)["counts"]
    assert counts["pending"] == 2 and counts["failed"] == 0 and scope.runs() == []
    filler.unlink()
    wait_for(lambda: len(scope.runs()) == 2, timeout=20)
    daemon.wait_for_event("archive.space_again")
    assert daemon.stop() == 0
    assert sorted(scope.run_sources()) == sorted(map(str, frames))
    assert len(daemon.events("archive.low_space")) == 1  # said once, not per try


def test_a_full_archive_is_one_alert_until_there_is_room() -> None:
    rules = AlertRules(AlertsConfig(), settle_time=0, summarize=lambda since: ({}, {}))
    rules.frame_finished(Outcome("a.fit", "low_space", reason="the archive's disk has 3 MB"))
    (alert,) = rules.due()
    assert alert.kind == "low_space" and "3 MB" in alert.body and "Nothing is lost" in alert.body


# -- names and spellings -----------------------------------------------------------------


@pytest.mark.slow
def test_a_second_spelling_of_a_frame_runs_it_once(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    """One file seen under two paths (here a bind of its folder; on a share, a link the
    server follows or a name it mangles) is one frame."""
    daemon = start(scope, daemons)
    original = write_frame(scope.share / "M 42_sub" / "Light_M 42_001.fit")
    wait_for(lambda: len(scope.runs()) == 1, timeout=20)
    twin = scope.share / "M 42_copy" / original.name
    twin.parent.mkdir()
    os.link(original, twin)  # the same file, the same name, size and time
    daemon.wait_for_event("frame.second_spelling")
    daemon.wait_for_next("scan.finished")
    assert daemon.stop() == 0
    assert scope.run_sources() == [str(original)]
    assert "M 42_sub/Light_M 42_001.fit" in reasons(scope, "skipped")[original.name]


@pytest.mark.slow
def test_names_that_are_no_path_step_are_never_frames(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    daemon = start(scope, daemons)
    write_frame(scope.share / "..." / "dots.fit")  # "..." is the same folder on Windows
    write_frame(scope.share / "M 42_sub" / "back\\slash.fit")  # a separator on SMB
    good = write_frame(scope.share / "M 42_sub" / "good.fit")
    wait_for(lambda: scope.run_sources() == [str(good)], timeout=20)
    daemon.wait_for_next("scan.finished")
    assert daemon.stop() == 0
    assert scope.run_sources() == [str(good)]


@pytest.mark.slow
def test_a_folder_deeper_than_eight_is_not_entered(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    deep = scope.share.joinpath(*[f"d{n}" for n in range(9)])
    daemon = start(scope, daemons)
    shallow = write_frame(scope.share.joinpath(*[f"d{n}" for n in range(8)]) / "eight.fit")
    write_frame(deep / "nine.fit")
    wait_for(lambda: scope.run_sources() == [str(shallow)], timeout=20)
    daemon.wait_for_next("scan.finished")
    assert daemon.stop() == 0
    assert scope.run_sources() == [str(shallow)]


@pytest.fixture
def bound_onto_itself(scope: Scope) -> Any:
    """`MyWorks/loop` bound onto MyWorks (root only): a plain folder that holds itself, as
    a share's server shows a link it follows."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("a bind mount needs root")
    loop = scope.share / "loop"
    loop.mkdir()
    done = subprocess.run(["mount", "--bind", str(scope.share), str(loop)], check=False)
    if done.returncode != 0:
        pytest.skip("cannot bind-mount here")
    yield loop
    subprocess.run(["umount", "-l", str(loop)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("observer", ["native", "polling"])
def test_a_folder_that_holds_itself_is_listed_and_polled_once(
    scope: Scope, daemons: list[DaemonProcess], bound_onto_itself: Path, observer: str
) -> None:
    scope.update(image_watcher={"observer": observer}, state={"process_existing": True})
    old = write_frame(scope.share / "M 42_sub" / "old.fit")
    listed = scope.cli("check-mount", "--json")
    assert json.loads(listed.stdout)["frames"] == 1, listed.stdout
    daemon = start(scope, daemons)
    new = write_frame(scope.share / "M 42_sub" / "new.fit")
    wait_for(lambda: len(scope.runs()) == 2, timeout=20)
    daemon.wait_for_next("scan.finished")
    assert daemon.stop() == 0
    ran = sorted(os.path.basename(source) for source in scope.run_sources())
    assert ran == sorted([old.name, new.name])  # each once, under one of its spellings


# -- headers made to crash a report ---------------------------------------------------------


def test_a_date_obs_beyond_year_9999_in_utc_shows_when_the_frame_was_seen() -> None:
    assert observed_at("9999-12-31T23:59:59-14:00", 0) == "1970-01-01T00:00:00Z"
    assert observed_at("2026-11-23T21:00:00", 0) == "2026-11-23T21:00:00Z"


# -- no loop of the daemon dies of an exception -------------------------------------------


def test_a_thread_that_fails_is_reported_and_started_again(logs: list[dict[str, Any]]) -> None:
    lifecycle = Lifecycle(0)
    calls, failures = [], []

    def target() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")

    thread = threading.Thread(
        target=lifecycle.keep_running,
        args=("intake", target, lambda name, exc: failures.append((name, str(exc)))),
        kwargs={"pause": 0.01},
    )
    thread.start()
    thread.join(10)
    assert len(calls) == 3 and not thread.is_alive()
    assert failures == [("intake", "Python int too large to convert to SQLite INTEGER")] * 2
    failed = events_named(logs, "daemon.thread_failed")
    assert len(failed) == 2 and failed[0]["exc_info"] and failed[0]["thread_name"] == "intake"
    assert len(events_named(logs, "daemon.thread_restarted")) == 2


def test_a_failed_thread_is_one_alert_per_thread_and_error() -> None:
    rules = AlertRules(AlertsConfig(), settle_time=0, summarize=lambda since: ({}, {}))
    for _ in range(3):
        rules.thread_failed("intake", "OverflowError: too large")
    rules.thread_failed("worker-1", "OverflowError: too large")
    alerts = rules.due()
    assert [a.kind for a in alerts] == ["thread_failed"] * 2
    assert "intake" in alerts[0].title and "started again" in alerts[0].body


# -- secrets and files other local users could read ----------------------------------------


@pytest.mark.slow
def test_an_smb_password_in_a_config_others_may_read_is_warned_of(scope: Scope) -> None:
    scope.update(image_watcher={"watch_path": "smb://ann:hunter2@127.0.0.1:1/EMMC Images/MyWorks"})
    os.chmod(scope.config_path, 0o644)
    checked = scope.cli("check-config")
    assert checked.returncode == 0, checked.stderr
    assert "holds the password in image_watcher.watch_path" in checked.stdout
    assert f"chmod 600 {scope.config_path}" in checked.stdout
    ran = scope.cli("run", "--once")
    assert ran.returncode == 1  # nothing answers on port 1
    (said,) = [json.loads(line) for line in ran.stderr.splitlines() if "config.readable" in line]
    assert "password" in said["warning"]
    assert "hunter2" not in checked.stdout + checked.stderr + ran.stdout + ran.stderr
    os.chmod(scope.config_path, 0o600)
    assert "warning" not in scope.cli("check-config").stdout


@pytest.mark.slow
def test_what_run_creates_is_its_users_alone_and_the_command_keeps_the_users_umask(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    previous = os.umask(0o022)  # a plain `run` from a shell
    try:
        daemon = start(scope, daemons)
    finally:
        os.umask(previous)
    write_frame(scope.share / "M 42_sub" / "a.fit")
    wait_for(lambda: len(scope.runs()) == 1, timeout=20)
    daemon.wait_for_event("pipeline.finished")
    ledger = scope.ledger
    made = [
        ledger,
        ledger.with_name(ledger.name + "-wal"),
        ledger.with_name(ledger.name + ".lock"),
        ledger.with_name(ledger.name + ".daemon.json"),
        scope.archive / "M 42_sub",
        scope.archive / "M 42_sub" / "a.fit",
    ]
    wait_for(made[3].exists)
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in made}
    assert daemon.stop() == 0
    assert all(int(mode, 8) & 0o077 == 0 for mode in modes.values()), modes
    assert (scope.records / "runs.jsonl").stat().st_mode & 0o777 == 0o644  # the command's
