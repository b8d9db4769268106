"""The real daemon in a subprocess: exactly once across restarts, crashes, rescans and bad input."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import frame_bytes, real_header, small_header, wait_for, write_frame
from tests.harness import RECORDER, DaemonProcess, Scope, started_daemon

pytestmark = pytest.mark.slow


@pytest.fixture
def scope(tmp_path: Path) -> Scope:
    return Scope(tmp_path)


def start(scope: Scope, daemons: list[DaemonProcess], *args: str) -> DaemonProcess:
    return started_daemon(scope, daemons, *args, until="watcher.started")


def frame(scope: Scope, name: str, content: bytes | None = None) -> Path:
    return write_frame(scope.share / "M 42_sub" / name, content)


def test_first_start_skips_what_is_there_and_runs_what_arrives(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    frame(scope, "old.fit")
    daemon = start(scope, daemons)
    new = frame(scope, "new.fit")
    wait_for(scope.runs)
    daemon.wait_for_event("pipeline.finished")
    assert daemon.stop() == 0
    assert scope.run_sources() == [str(new)]
    assert daemon.events("ledger.baseline")[0]["skipped"] == 1


def test_process_existing_runs_what_is_there_on_first_start(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    old = frame(scope, "old.fit")
    daemon = start(scope, daemons, "--process-existing")
    wait_for(scope.runs)
    daemon.stop()
    assert scope.run_sources() == [str(old)]


def test_restart_runs_only_what_arrived_while_down(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    daemon = start(scope, daemons)
    first = frame(scope, "first.fit")
    wait_for(lambda: len(scope.runs()) == 1)
    daemon.wait_for_event("pipeline.finished")
    assert daemon.stop() == 0

    while_down = frame(scope, "while_down.fit")
    daemon = start(scope, daemons)
    wait_for(lambda: len(scope.runs()) == 2)
    daemon.wait_for_event("scan.finished", count=3)  # several rescans later, still no more runs
    assert daemon.stop() == 0
    assert scope.run_sources() == [str(first), str(while_down)]


def test_sigkill_during_a_run_reruns_that_frame_and_duplicates_nothing(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    daemon = start(scope, daemons)
    done = frame(scope, "done.fit")
    wait_for(lambda: len(scope.runs()) == 1)
    daemon.wait_for_event("pipeline.finished")
    scope.behave("slow:30")
    daemon.stop()
    daemon = start(scope, daemons)
    interrupted = frame(scope, "interrupted.fit")
    wait_for(lambda: len(scope.runs()) == 2)  # the slow run has started
    daemon.kill()  # SIGKILL: no chance to clean up; the row stays `running`

    scope.behave("ok")
    daemon = start(scope, daemons)
    wait_for(lambda: len(scope.runs()) == 3)
    daemon.wait_for_event("pipeline.finished")
    daemon.wait_for_event("scan.finished", count=3)
    assert daemon.stop() == 0
    assert daemon.events("ledger.recovered")[0]["frames"] == 1
    assert scope.run_sources() == [str(done), str(interrupted), str(interrupted)]


def test_repeated_events_and_rescans_never_double_run(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    daemon = start(scope, daemons)
    path = frame(scope, "once.fit")
    wait_for(scope.runs)
    for _ in range(5):
        with path.open("ab"):
            pass  # close-after-write events for an unchanged file
    daemon.wait_for_event("scan.finished", count=4)
    assert daemon.stop() == 0
    assert scope.run_sources() == [str(path)]


def test_a_new_version_of_a_done_frame_runs_again(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    daemon = start(scope, daemons)
    path = frame(scope, "twice.fit")
    wait_for(lambda: len(scope.runs()) == 1)
    path.write_bytes(frame_bytes(real_header()))  # new size and mtime: a new version
    wait_for(lambda: len(scope.runs()) == 2)
    daemon.stop()


HOSTILE = [
    "$(touch pwned).fit",
    "a;b.fit",
    "-rf --output=x.fit",
    "new\nline.fit",
    "`touch pwned2`.fit",
    'quote\'s "and" spaces.fit',
]


def test_hostile_names_reach_the_command_as_one_exact_argument(
    scope: Scope, daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    scope.update(
        pipeline={"command": [*scope.settings["pipeline"]["command"], "{name}", "--", "{relpath}"]}
    )
    daemon = start(scope, daemons)
    names = [*HOSTILE]
    for name in names:
        frame(scope, name)
    raw_name = b"caf\xe9-\xff.fit"  # not UTF-8
    raw_path = os.fsencode(scope.share / "M 42_sub") + b"/" + raw_name
    with open(raw_path, "wb") as out:
        out.write(frame_bytes(small_header()))
    wait_for(lambda: len(scope.runs()) == len(names) + 1, timeout=30)
    daemon.wait_for_event("scan.finished", count=3)
    assert daemon.stop() == 0

    runs = scope.runs()
    assert len(runs) == len(names) + 1
    expected = {os.fsdecode(name.encode()) for name in names} | {os.fsdecode(raw_name)}
    assert {os.path.basename(run["source"]) for run in runs} == expected
    for run in runs:
        path, name, dashes, relpath = run["argv"]
        assert path == str(scope.archive / "M 42_sub" / name)  # one absolute argument
        assert dashes == "--" and relpath == f"M 42_sub/{name}"
        assert os.fsencode(path) == os.fsencode(run["path"])
    assert not list(tmp_path.rglob("pwned*")) and not Path("pwned").exists()
    for entry in daemon.logs():
        assert entry["event"] != "<not json>", entry  # one record per line despite the newline


def test_a_failing_command_is_retried_then_failed_then_retry_puts_it_back(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.behave("fail")
    scope.update(pipeline={"retries": 2})
    daemon = start(scope, daemons)
    path = frame(scope, "bad.fit")
    daemon.wait_for_event("frame.failed")
    assert len(scope.runs()) == 3  # first try + 2 retries
    assert len(daemon.events("frame.retry_scheduled")) == 2
    output = daemon.events("pipeline.output")
    assert output[0]["line"] == "photometry failed: no stars" and output[0]["stream"] == "stderr"
    assert daemon.events("pipeline.finished")[0]["exit_code"] == 3

    status = json.loads(scope.cli("status", "--json").stdout)
    assert status["counts"]["failed"] == 1
    assert status["frames"][0]["exit_code"] == 3 and status["frames"][0]["attempts"] == 3
    assert status["frames"][0]["reason"] == "exit code 3: photometry failed: no stars"
    assert "(exit code 3: photometry failed: no stars)" in scope.cli("status").stdout

    scope.behave("ok")  # the daemon keeps its loaded config: retry, then restart to fix it
    assert daemon.stop() == 0
    result = scope.cli("retry", str(path))
    assert result.returncode == 0 and "1 failed frame(s) back to pending" in result.stdout
    daemon = start(scope, daemons)
    wait_for(lambda: len(scope.runs()) == 4)
    daemon.wait_for_event("pipeline.finished")
    daemon.stop()
    assert json.loads(scope.cli("status", "--json").stdout)["counts"]["done"] == 1


def test_retry_reaches_a_running_daemon(scope: Scope, daemons: list[DaemonProcess]) -> None:
    scope.behave("fail-then-ok")
    scope.update(pipeline={"retries": 0})
    daemon = start(scope, daemons)
    frame(scope, "flaky.fit")
    daemon.wait_for_event("frame.failed")
    assert scope.cli("retry", "--failed").returncode == 0
    wait_for(lambda: len(scope.runs()) == 2)
    daemon.wait_for_event("frame.failed", count=2)  # fail-count 1 -> fails once more
    scope.cli("retry", "--failed")
    daemon.wait_for_event("pipeline.finished", count=3)
    daemon.stop()
    assert json.loads(scope.cli("status", "--json").stdout)["counts"]["done"] == 1


def test_a_hanging_command_is_killed_at_the_timeout_with_its_whole_group(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.behave("hang")
    scope.update(pipeline={"timeout": 1, "retries": 0})
    daemon = start(scope, daemons)
    frame(scope, "hang.fit")
    failed = daemon.wait_for_event("frame.failed", timeout=30)
    assert "timeout" in failed[0]["reason"]
    child = int((scope.records / "hang-child.pid").read_text())
    wait_for(lambda: not _alive(child), timeout=10)
    daemon.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie already killed counts as gone
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


def test_a_grandchild_holding_stdout_does_not_hang_the_daemon(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.behave("grandchild")
    daemon = start(scope, daemons)
    frame(scope, "a.fit")
    frame(scope, "b.fit")
    finished = daemon.wait_for_event("pipeline.finished", count=2, timeout=30)
    assert all(entry["exit_code"] == 0 for entry in finished)
    assert daemon.stop() == 0


def test_an_output_flood_is_capped(scope: Scope, daemons: list[DaemonProcess]) -> None:
    scope.behave("flood")
    daemon = start(scope, daemons)
    frame(scope, "loud.fit")
    finished = daemon.wait_for_event("pipeline.finished", timeout=60)
    assert finished[0]["exit_code"] == 0
    assert daemon.events("pipeline.output_truncated")[0]["dropped_bytes"] > 40_000_000
    assert len(daemon.events("pipeline.output")) <= 70
    assert daemon.log_path.stat().st_size < 2_000_000
    daemon.stop()


def test_a_command_that_vanishes_fails_each_frame_clearly(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    program = scope.root / "photometry"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    scope.update(pipeline={"command": [str(program), "{path}"], "retries": 0})
    daemon = start(scope, daemons)
    program.unlink()  # uninstalled while the daemon runs
    frame(scope, "a.fit")
    failed = daemon.wait_for_event("frame.failed")
    assert failed[0]["reason"] == f"command not found: {program}"
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.text()
    check = scope.cli("check-config")
    assert check.returncode == 1
    assert f"pipeline.command: {program}" in check.stderr


def test_run_refuses_to_start_with_what_check_config_reports(scope: Scope) -> None:
    scope.update(pipeline={"command": ["/nonexistent/photometry", "{path}"]})
    scope.update(image_watcher={"watch_path": str(scope.root / "config.yaml")})  # a file
    check = scope.cli("check-config")
    existing = frame(scope, "x.fit")
    for args in (["run"], ["run", "--once"], ["process", str(existing)]):
        result = scope.cli(*args)
        assert result.returncode == 1, args
        assert "pipeline.command: /nonexistent/photometry: no such file" in result.stderr
        assert "image_watcher.watch_path:" in result.stderr and "is a file" in result.stderr
        assert result.stderr == check.stderr
        assert "Traceback" not in result.stderr
    assert not scope.ledger.exists()  # nothing was started


def test_two_daemons_on_one_ledger(scope: Scope, daemons: list[DaemonProcess]) -> None:
    daemon = start(scope, daemons)
    second = scope.cli("run")
    assert second.returncode == 1
    assert "in use by another seestar-watch" in second.stderr
    assert f"pid {daemon.process.pid}" in second.stderr
    daemon.stop()


def test_a_corrupt_ledger_is_reported_and_never_recreated(scope: Scope) -> None:
    scope.ledger.parent.mkdir(parents=True)
    scope.ledger.write_bytes(b"this is not sqlite" * 100)
    result = scope.cli("run", "--once")
    assert result.returncode == 1
    assert "unreadable or corrupt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert scope.ledger.read_bytes() == b"this is not sqlite" * 100


def test_sigterm_lets_the_running_command_finish_within_the_grace(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.behave("slow:1.5")
    daemon = start(scope, daemons)
    frame(scope, "a.fit")
    frame(scope, "b.fit")
    wait_for(lambda: len(scope.runs()) == 1)
    assert daemon.stop(signal.SIGTERM) == 0
    assert (scope.records / "slow-finished").read_text() == "x\n"
    assert len(scope.runs()) == 1  # no new work after the signal
    counts = json.loads(scope.cli("status", "--json").stdout)["counts"]
    assert counts["done"] == 1 and counts["pending"] == 1  # b waits for the next start


def test_past_the_grace_the_command_is_stopped_and_its_frame_stays_pending(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.behave("slow:60")
    scope.update(pipeline={"shutdown_grace": 0.5})
    daemon = start(scope, daemons)
    frame(scope, "a.fit")
    wait_for(lambda: len(scope.runs()) == 1)
    assert daemon.stop(signal.SIGINT) == 0
    counts = json.loads(scope.cli("status", "--json").stdout)["counts"]
    assert counts["pending"] == 1 and counts["failed"] == 0
    assert not (scope.records / "slow-finished").exists()


def test_the_archive_copy_is_exact_and_the_source_untouched(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    daemon = start(scope, daemons)
    content = frame_bytes(real_header())
    path = frame(scope, "Light_M 94.fit", content)
    before = path.stat()
    wait_for(scope.runs)
    daemon.stop()
    copy = scope.archive / "M 42_sub" / "Light_M 94.fit"
    assert copy.read_bytes() == content
    assert path.read_bytes() == content
    after = path.stat()
    assert (after.st_mtime_ns, after.st_size, after.st_ino) == (
        before.st_mtime_ns,
        before.st_size,
        before.st_ino,
    )
    assert scope.runs()[0]["path"] == str(copy)
    assert not [p for p in copy.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_without_archive_the_command_gets_the_share_path(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.update(archive={"enabled": False})
    daemon = start(scope, daemons)
    path = frame(scope, "direct.fit")
    wait_for(scope.runs)
    daemon.stop()
    run = scope.runs()[0]
    assert run["argv"] == [str(path)] and run["path"] == str(path) == run["source"]
    assert not scope.archive.exists()


def test_the_event_reaches_the_command_on_stdin_and_in_the_environment(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.update(pipeline={"env": {**scope.settings["pipeline"]["env"], "EXTRA_SETTING": "42"}})
    daemon = start(scope, daemons)
    path = frame(scope, "Light_M 94.fit", frame_bytes(real_header()))
    wait_for(scope.runs)
    daemon.stop()
    run = scope.runs()[0]
    event = json.loads(run["stdin"])
    assert event == json.loads(run["event"])
    assert set(event) == {"path", "source", "relpath", "header", "size_kb"}
    assert event["source"] == str(path) and event["relpath"] == "M 42_sub/Light_M 94.fit"
    assert event["header"]["OBJECT"] == "M 94" and event["header"]["NAXIS1"] == 1080
    assert event["size_kb"] == pytest.approx(4_152_960 / 1024)
    assert run["extra"] == "42"
    assert run["config"] == str(scope.config_path)  # a stage of ours reads the same config


def test_notify_socket_and_watchdog_variables_do_not_reach_the_command(
    scope: Scope, daemons: list[DaemonProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    daemon = start(scope, daemons)
    frame(scope, "a.fit")
    wait_for(scope.runs)
    daemon.stop()
    assert scope.runs()[0]["leaked"] == []


def test_broken_and_ignored_files(scope: Scope, daemons: list[DaemonProcess]) -> None:
    scope.update(image_watcher={"ignore": ["Stacked_*", "DSO_Stacked_*"]})
    daemon = start(scope, daemons)
    frame(scope, "Stacked_30_M 42.fit")
    frame(scope, "broken.fit", b"not a fits file\n" * 100)
    good = frame(scope, "good.fit")
    rejected = daemon.wait_for_event("frame.rejected")
    wait_for(scope.runs)
    daemon.wait_for_event("scan.finished", count=3)
    daemon.stop()
    assert scope.run_sources() == [str(good)]
    assert "not a FITS file" in rejected[0]["reason"]
    counts = json.loads(scope.cli("status", "--json").stdout)["counts"]
    assert counts["rejected"] == 1 and counts["done"] == 1


def test_status_json_schema(scope: Scope) -> None:
    scope.update(state={"process_existing": True})
    frame(scope, "a.fit")
    assert scope.cli("run", "--once").returncode == 0
    status = json.loads(scope.cli("status", "--json", "--limit", "5").stdout)
    assert set(status["counts"]) == {"pending", "running", "done", "failed", "rejected", "skipped"}
    assert status["counts"]["done"] == 1
    (entry,) = status["frames"]
    assert {"source", "state", "attempts", "exit_code", "updated_at"} <= set(entry)
    assert entry["source"] == str(scope.share / "M 42_sub" / "a.fit")
    assert entry["state"] == "done" and entry["attempts"] == 1 and entry["exit_code"] == 0
    text = scope.cli("status")
    assert text.returncode == 0 and "done 1" in text.stdout


def test_status_before_any_run(scope: Scope) -> None:
    result = scope.cli("status", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["frames"] == []


def test_run_once_exit_codes(scope: Scope) -> None:
    scope.update(state={"process_existing": True}, pipeline={"retries": 1})
    frame(scope, "a.fit")
    assert scope.cli("run", "--once").returncode == 0
    scope.behave("fail")
    frame(scope, "b.fit")
    result = scope.cli("run", "--once")
    assert result.returncode == 1
    assert len(scope.runs()) == 3


def test_process_runs_now_and_force_reruns(scope: Scope) -> None:
    path = frame(scope, "manual.fit")
    result = scope.cli("process", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("done")
    again = scope.cli("process", str(path))  # done is done: exit 0, as the README says
    assert again.returncode == 0 and "already done" in again.stdout
    forced = scope.cli("process", str(path), "--force")
    assert forced.returncode == 0
    assert scope.run_sources() == [str(path), str(path)]


def test_process_refuses_files_outside_the_watch_path(scope: Scope, tmp_path: Path) -> None:
    outside = write_frame(tmp_path / "elsewhere.fit")
    result = scope.cli("process", str(outside))
    assert result.returncode == 1
    assert "is not a frame of image_watcher.watch_path" in result.stderr


def test_disabled_watcher_says_so_and_exits_1(scope: Scope) -> None:
    scope.update(image_watcher={"enabled": False})
    result = scope.cli("run")
    assert result.returncode == 1
    assert "image_watcher.enabled is false" in result.stderr


def test_ledger_rows_and_pragmas(scope: Scope) -> None:
    scope.update(state={"process_existing": True})
    frame(scope, "a.fit")
    assert scope.cli("run", "--once").returncode == 0
    db = sqlite3.connect(scope.ledger)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 4  # schema 4: task ids
    row: Any = db.execute(
        "SELECT relpath, state, attempts, exit_code, archived FROM frames"
    ).fetchone()
    assert row == (
        b"M 42_sub/a.fit",
        "done",
        1,
        0,
        os.fsencode(scope.archive / "M 42_sub" / "a.fit"),
    )


def test_a_second_ctrl_c_stops_at_once(scope: Scope, daemons: list[DaemonProcess]) -> None:
    scope.behave("slow:60")
    scope.update(pipeline={"shutdown_grace": 60})
    daemon = start(scope, daemons)
    frame(scope, "a.fit")
    wait_for(lambda: len(scope.runs()) == 1)
    daemon.process.send_signal(signal.SIGINT)
    daemon.wait_for_event("daemon.stopping")
    assert daemon.stop(signal.SIGINT, timeout=15) == 0
    stopped = daemon.events("daemon.stopped")[0]
    assert stopped.get("stuck_threads") is None  # no thread left behind
    assert "second Ctrl-C" in daemon.events("daemon.stopping")[0]["note"]
    assert json.loads(scope.cli("status", "--json").stdout)["counts"]["pending"] == 1


def test_more_workers_run_frames_at_once(scope: Scope, daemons: list[DaemonProcess]) -> None:
    scope.behave("slow:2")
    scope.update(pipeline={"workers": 2})
    daemon = start(scope, daemons)
    frame(scope, "a.fit")
    frame(scope, "b.fit")
    wait_for(lambda: len(scope.runs()) == 2, timeout=10)
    first, second = (run["started"] for run in scope.runs())
    assert abs(second - first) < 1.5  # the second started while the first still ran
    daemon.stop()


def test_a_bug_is_exit_3_with_one_line_and_a_logged_traceback(
    scope: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from seestar_watch.cli import cli
    from seestar_watch.daemon import Daemon

    def broken(self: Daemon, *, once: bool = False) -> int:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(Daemon, "run", broken)
    result = CliRunner().invoke(cli, ["run", "-c", str(scope.config_path)])
    assert result.exit_code == 3
    assert "internal error: RuntimeError: simulated bug (this is a bug)" in result.output


def test_no_wait_exits_1_when_nothing_is_mounted(scope: Scope) -> None:
    scope.update(image_watcher={"mount_point": str(scope.share.parent)})
    result = scope.cli("run", "--no-wait")
    assert result.returncode == 1
    assert f"nothing is mounted at {scope.share.parent}" in result.stderr
    assert "check-mount" in result.stderr


def test_a_ledger_folder_that_cannot_be_written_is_one_line_and_exit_1(
    scope: Scope, read_only_folder: Path
) -> None:
    ledger = read_only_folder / "state" / "ledger.sqlite3"
    scope.update(state={"path": str(ledger)})
    for args in (["run"], ["run", "--once"], ["check-config"]):
        result = scope.cli(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "state.path: cannot create" in result.stderr
        assert "read-only file system" in result.stderr
        assert "bug" not in result.stderr and "Traceback" not in result.stderr
    retried = scope.cli("retry", "--failed")
    assert retried.returncode == 1
    assert f"cannot write the ledger {ledger}" in retried.stderr
    assert "corrupt" not in retried.stderr and "Traceback" not in retried.stderr


def test_frames_in_sub_folders_with_recursive_off_are_warned_about(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.update(image_watcher={"recursive": False})
    frame(scope, "old.fit")  # in MyWorks/M 42_sub/, where the Seestar writes
    daemon = start(scope, daemons)
    warning = daemon.wait_for_event("watch.subfolders_not_watched")[0]
    assert warning["folders"] == 1 and warning["example"].endswith("M 42_sub")
    assert "recursive: true" in warning["fix"]
    daemon.stop()
    once = scope.cli("run", "--once")
    assert "watch.subfolders_not_watched" in once.stderr


def test_a_truncated_frame_is_given_up_on_despite_rescans(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.update(image_watcher={"incomplete_timeout": 2, "rescan_interval": 0.5})
    daemon = start(scope, daemons)
    cut = frame(scope, "cut.fit", frame_bytes(real_header())[:8192])
    rejected = daemon.wait_for_event("frame.rejected", timeout=20)
    assert rejected[0]["path"] == str(cut) and "incomplete" in rejected[0]["reason"]
    daemon.wait_for_event("scan.finished", count=len(daemon.events("scan.finished")) + 3)
    assert len(daemon.events("frame.rejected")) == 1  # recorded once, then left alone
    daemon.stop()
    status = json.loads(scope.cli("status", "--json").stdout)
    assert status["counts"]["rejected"] == 1


def test_process_existing_on_an_existing_ledger_says_it_does_nothing(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    old = frame(scope, "old.fit")
    start(scope, daemons).stop()  # the first start: old.fit is skipped
    daemon = start(scope, daemons, "--process-existing")
    ignored = daemon.wait_for_event("ledger.process_existing_ignored")[0]
    assert "seestar-watch process FRAME" in ignored["note"]
    daemon.stop()
    assert scope.runs() == []
    result = scope.cli("process", str(old))  # what the note says runs a skipped frame
    assert result.returncode == 0 and scope.run_sources() == [str(old)]


def test_small_things_a_user_reads(scope: Scope, daemons: list[DaemonProcess]) -> None:
    daemon = start(scope, daemons)
    done = frame(scope, "a.fit")
    daemon.wait_for_event("pipeline.finished")
    daemon.stop()
    for entry in daemon.logs():  # `reason=None` says nothing: such keys are left out
        assert None not in entry.values(), entry
    counts_only = scope.cli("status", "--limit", "0")
    assert counts_only.returncode == 0 and "done 1" in counts_only.stdout
    assert "no frames recorded" not in counts_only.stdout and "a.fit" not in counts_only.stdout
    retried = scope.cli("retry", str(done))
    assert retried.returncode == 0
    assert "done, not failed; `seestar-watch process --force FRAME` runs it again" in retried.stdout
    check = scope.cli("check-config")
    assert "0 retries" not in check.stdout and "worker(s)" not in check.stdout
    assert "1 worker," not in check.stdout and "1 worker" in check.stdout


def test_relative_paths_mean_the_same_ledger_from_any_folder(scope: Scope, tmp_path: Path) -> None:
    scope.update(
        image_watcher={"watch_path": "share/MyWorks"},
        state={"path": "state/ledger.sqlite3"},
        archive={"path": "archive"},
        pipeline={"command": ["python3", "recorder.py", "{path}"]},
    )
    checked = scope.cli("check-config")
    assert checked.returncode == 1  # the script is looked for beside the config
    assert "recorder.py: no such file (looked in" in checked.stderr
    (scope.root / "recorder.py").write_text(RECORDER.read_text())
    scope.update(state={"process_existing": True})
    frame(scope, "a.fit")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "seestar_watch", "run", "--once", "-c", str(scope.config_path)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert scope.ledger.exists() and not (elsewhere / "state").exists()
    assert len(scope.runs()) == 1 and scope.runs()[0]["argv"][0].startswith(str(scope.archive))
    status = json.loads(scope.cli("status", "--json").stdout)
    assert status["counts"]["done"] == 1


def test_process_runs_a_frame_a_killed_daemon_left_running(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.behave("slow:30")
    daemon = start(scope, daemons)
    path = frame(scope, "a.fit")
    wait_for(scope.runs)
    daemon.kill()  # the row stays `running`
    assert json.loads(scope.cli("status", "--json").stdout)["counts"]["running"] == 1
    scope.behave("ok")
    result = scope.cli("process", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("done")
    assert len(scope.runs()) == 2


def test_a_first_start_that_waits_for_the_share_runs_what_arrives_meanwhile(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    # the share is not there when seestar-watch is first started (watch_path missing)
    scope.update(image_watcher={"mount_retry": 0.3})
    scope.share.rmdir()
    daemon = started_daemon(scope, daemons, until="share.waiting")
    assert daemon.stop() == 0  # and a restart while still waiting changes nothing
    daemon = started_daemon(scope, daemons, until="share.waiting")
    staging = scope.root / "staging" / "MyWorks" / "M 42_sub"
    old = write_frame(staging / "before_the_first_start.fit")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    write_frame(staging / "while_waiting.fit")  # written after the first start
    staging.parent.rename(scope.share)  # the share appears, both frames on it
    new = scope.share / "M 42_sub" / "while_waiting.fit"
    daemon.wait_for_event("pipeline.finished")
    baseline = daemon.events("ledger.baseline")[0]
    assert baseline["skipped"] == 1 and baseline["run"] == 1
    daemon.wait_for_event("scan.finished", count=2)
    assert daemon.stop() == 0
    assert scope.run_sources() == [str(new)]


def test_a_copy_cut_off_by_a_power_cut_leaves_no_temporary_behind(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    leftover = scope.archive / "M 42_sub" / ".seestar-watch.4000000.139.partial"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"\0" * 100_000)  # a dead daemon's copy, half done
    scope.update(state={"process_existing": True})
    path = frame(scope, "a.fit")
    result = scope.cli("run", "--once")
    assert result.returncode == 0, result.stderr
    assert not leftover.exists()
    assert "archive.leftovers_removed" in result.stderr
    assert (scope.archive / "M 42_sub" / "a.fit").read_bytes() == path.read_bytes()
    assert list((scope.archive / "M 42_sub").iterdir()) == [scope.archive / "M 42_sub" / "a.fit"]


def test_another_process_holding_the_ledger_lock_delays_but_never_fails_a_frame(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.behave("slow:1")
    daemon = start(scope, daemons)
    frame(scope, "a.fit")
    wait_for(scope.runs, timeout=15)
    blocker = sqlite3.connect(scope.ledger, timeout=1, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # a user's sqlite3 shell, a backup tool...
    try:
        # the command exits 0 meanwhile; recording it waits out the 10 s busy timeout
        unwritable = daemon.wait_for_event("ledger.unwritable", timeout=30)[0]
        assert "locked" in unwritable["reason"]
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    daemon.wait_for_event("ledger.writable_again", timeout=15)
    wait_for(lambda: json.loads(scope.cli("status", "--json").stdout)["counts"]["done"] == 1)
    assert daemon.stop() == 0
    status = json.loads(scope.cli("status", "--json").stdout)
    assert status["counts"]["failed"] == 0 and len(scope.runs()) == 1
    assert "Traceback" not in daemon.text()


def test_a_full_disk_under_the_ledger_keeps_frames_waiting_and_loses_none(
    scope: Scope, daemons: list[DaemonProcess], tmpfs: Callable[[str, str], Path]
) -> None:
    state = tmpfs("small-state", "size=2m")
    scope.update(state={"path": str(state / "ledger.sqlite3")})
    daemon = start(scope, daemons)
    filler = state / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):  # full, to the last byte
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    frame(scope, "a.fit")
    unwritable = daemon.wait_for_event("ledger.unwritable", timeout=20)[0]
    assert "full" in unwritable["reason"]
    assert scope.runs() == []
    filler.unlink()  # space again
    daemon.wait_for_event("pipeline.finished", timeout=30)
    assert daemon.stop() == 0
    assert len(scope.runs()) == 1
    assert "Traceback" not in daemon.text()
    status = json.loads(scope.cli("status", "--json").stdout)
    assert status["counts"]["done"] == 1


def test_a_nearly_full_ledger_disk_is_said_by_check_config_status_and_run(
    scope: Scope, tmpfs: Callable[[str, str], Path]
) -> None:
    state = tmpfs("small-state", "size=10m")
    scope.update(state={"path": str(state / "ledger.sqlite3"), "process_existing": True})
    check = scope.cli("check-config")
    assert check.returncode == 0 and "warning: the ledger's file system" in check.stdout
    once = scope.cli("run", "--once")
    assert once.returncode == 0 and "ledger.low_space" in once.stderr
    status = scope.cli("status")
    assert "warning: the ledger's file system" in status.stdout
    assert (
        "MB free, less than 100 MB" in json.loads(scope.cli("status", "--json").stdout)["warning"]
    )


def pid_in(scope: Scope, name: str) -> int:
    path = scope.records / name
    wait_for(lambda: path.exists() and path.read_text().strip(), timeout=15)
    return int(path.read_text())


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(") ", 1)[1][0] == "Z"
    except FileNotFoundError:
        return True


def test_a_command_dies_with_a_daemon_killed_by_sigkill(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.behave("slow:60")
    daemon = start(scope, daemons)
    frame(scope, "a.fit")
    command = wait_for(scope.runs, timeout=15)[0]["pid"]
    daemon.kill()
    wait_for(lambda: gone(command), timeout=10)  # its parent-death signal


def test_a_killed_daemons_command_group_is_stopped_before_the_frame_runs_again(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.behave("group:60")
    daemon = start(scope, daemons)
    frame(scope, "a.fit")
    helper = pid_in(scope, "group-helper.pid")  # in the command's group, not its child
    daemon.kill()
    assert not gone(helper)  # the command died with the daemon; its helper did not
    scope.behave("ok")
    daemon = start(scope, daemons)
    stopped = daemon.wait_for_event("pipeline.orphan_stopped", timeout=15)[0]
    assert stopped["frame"] == "M 42_sub/a.fit"
    wait_for(lambda: gone(helper), timeout=10)
    wait_for(lambda: len(scope.runs()) == 2, timeout=15)  # then the frame runs again
    daemon.stop()


def test_a_process_that_escapes_its_group_is_stopped_when_the_run_is_over(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.behave("escape")
    daemon = start(scope, daemons)
    frame(scope, "a.fit")
    escaped = pid_in(scope, "escaped.pid")
    daemon.wait_for_event("pipeline.finished", timeout=15)
    stopped = daemon.wait_for_event("pipeline.escaped_stopped", timeout=15)[0]
    assert stopped["pid"] == escaped
    wait_for(lambda: gone(escaped), timeout=10)
    daemon.stop()


def test_sigkill_during_a_burst_loses_nothing_and_reruns_at_most_one_frame_per_kill(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.behave("slow:0.2")
    daemon = start(scope, daemons)
    names = [f"burst_{n:02d}.fit" for n in range(20)]
    for name in names:
        frame(scope, name)
    wait_for(lambda: len(scope.runs()) >= 5, timeout=30)
    daemon.kill()  # mid-burst
    daemon = start(scope, daemons)
    wait_for(lambda: json.loads(scope.cli("status", "--json").stdout)["counts"]["done"] == 20, 60)
    assert daemon.stop() == 0
    runs = [source.rsplit("/", 1)[1] for source in scope.run_sources()]
    assert sorted(set(runs)) == names  # every frame ran
    assert len(runs) - len(names) <= 1  # at most the one that was running re-ran


def test_a_full_archive_disk_then_space_again_loses_nothing_and_leaves_no_partial_copy(
    scope: Scope, daemons: list[DaemonProcess], tmpfs: Callable[[str, str], Path]
) -> None:
    archive = tmpfs("small-archive", "size=1m")
    # no free-space floor: the copy itself meets the full disk (ENOSPC half-way)
    scope.update(
        archive={"path": str(archive), "min_free_mb": 0},
        pipeline={"retries": 20, "retry_delay": 0.5},
    )
    daemon = start(scope, daemons)
    filler = archive / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    path = frame(scope, "a.fit")
    retried = daemon.wait_for_event("frame.retry_scheduled", timeout=20)[0]
    assert retried["reason"].startswith("archive:")
    filler.unlink()  # space again
    daemon.wait_for_event("pipeline.finished", timeout=30)
    assert daemon.stop() == 0
    assert len(scope.runs()) == 1
    copy = archive / "M 42_sub" / "a.fit"
    assert copy.read_bytes() == path.read_bytes()
    assert not list(archive.rglob("*.partial"))


def frames_taken_out_of_order(scope: Scope, count: int = 8) -> list[Path]:
    """Frames whose names, creation and listing order are not the order they were taken
    in (their modification times): the oldest first in the list returned."""
    paths = [frame(scope, f"Light_{n:02d}.fit") for n in range(count)]
    taken = [paths[(5 * n + 3) % count] for n in range(count)]  # count not a multiple of 5
    for minute, path in enumerate(taken):
        when = 1_790_000_000 + 60 * minute
        os.utime(path, (when, when))
    return taken


def test_frames_that_waited_run_oldest_first(scope: Scope, daemons: list[DaemonProcess]) -> None:
    assert start(scope, daemons).stop() == 0  # the first start's baseline: nothing there
    taken = frames_taken_out_of_order(scope)
    daemon = start(scope, daemons)
    wait_for(lambda: len(scope.runs()) == len(taken), timeout=30)
    assert daemon.stop() == 0
    assert scope.run_sources() == [str(path) for path in taken]


def test_run_once_and_process_run_frames_oldest_first(scope: Scope) -> None:
    assert scope.cli("run", "--once").returncode == 0
    taken = frames_taken_out_of_order(scope)
    assert scope.cli("run", "--once").returncode == 0
    assert scope.run_sources() == [str(path) for path in taken]
    done = scope.cli("process", "--force", *sorted(map(str, taken)))
    assert done.returncode == 0, done.stderr
    assert scope.run_sources()[len(taken) :] == [str(path) for path in taken]


def test_a_frame_the_command_cannot_use_is_rejected_at_once_and_never_retried(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    scope.behave("unusable")  # exit 65, EX_DATAERR
    scope.update(pipeline={"retries": 2, "retry_delay": 0})
    daemon = start(scope, daemons)
    frame(scope, "stack.fit")
    (rejected,) = daemon.wait_for_event("frame.rejected")
    assert rejected["reason"] == (
        "the command cannot use this frame (exit code 65):"
        " not a light frame: NAXIS = 3 (an on-board stack)"
    )
    daemon.wait_for_next("scan.finished")
    assert daemon.stop() == 0
    assert len(scope.runs()) == 1 and not daemon.events("frame.retry_scheduled")
    retried = scope.cli("retry", "--failed")
    assert "0 failed frame(s) back to pending" in retried.stdout
    (shown,) = json.loads(scope.cli("status", "--json").stdout)["frames"]
    assert shown["state"] == "rejected" and shown["exit_code"] == 65


def test_process_and_retry_take_a_frame_as_status_prints_it_its_relpath_or_its_copy(
    scope: Scope,
) -> None:
    assert scope.cli("run", "--once").returncode == 0
    path = frame(scope, "a.fit")
    assert scope.cli("run", "--once").returncode == 0
    (shown,) = json.loads(scope.cli("status", "--json").stdout)["frames"]
    copy = scope.archive / "M 42_sub" / "a.fit"
    for name in (shown["source"], "M 42_sub/a.fit", str(copy)):
        done = scope.cli("process", "--force", name)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"done\t{name}\n"
    assert scope.run_sources() == [str(path)] * 4
    for name in (shown["source"], "M 42_sub/a.fit", str(copy)):
        said = scope.cli("retry", name)
        assert said.returncode == 0 and "done, not failed" in said.stdout, said.stderr
    elsewhere = scope.cli("process", str(scope.root / "elsewhere.fit"))
    assert elsewhere.returncode == 1 and "is not a frame of image_watcher.watch_path" in (
        elsewhere.stderr
    )


def test_process_since_runs_the_done_frames_again_from_their_copies_without_the_share(
    scope: Scope,
) -> None:
    assert scope.cli("run", "--once").returncode == 0
    taken = frames_taken_out_of_order(scope, count=7)
    assert scope.cli("run", "--once").returncode == 0
    scope.share.rename(scope.share.with_name("away"))  # the scope went to sleep
    again = scope.cli("process", "--since", "1h")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("done\t") == 7
    assert scope.run_sources() == [str(p) for p in taken] * 2  # oldest first, both times
    assert scope.cli("process", "--all").returncode == 0
    assert len(scope.runs()) == 21
    usage = scope.cli("process", "--all", str(taken[0]))
    assert usage.returncode == 2 and "give FRAMEs, or --since WHEN, or --all" in usage.stderr


def test_retention_removes_the_oldest_copies_of_finished_frames_only(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    size = len(frame_bytes(small_header()))
    scope.behave("fail-then-ok")  # the first two runs fail: with no retries, two failed frames
    scope.update(
        pipeline={"retries": 0},
        archive={"path": str(scope.archive), "max_gb": 2.5 * size / 1e9},
    )
    daemon = start(scope, daemons)
    names = [f"f{n}.fit" for n in range(5)]
    for count, name in enumerate(names, start=1):  # one after the other: oldest first
        frame(scope, name)
        daemon.wait_for_event("pipeline.finished", count=count)
    daemon.wait_for_event("archive.pruned")
    assert daemon.stop() == 0
    copies = sorted(p.name for p in (scope.archive / "M 42_sub").iterdir())
    assert copies[:2] == ["f0.fit", "f1.fit"]  # the failed frames': still needed
    assert "f2.fit" not in copies and "f4.fit" in copies  # the oldest done ones went first
    status = json.loads(scope.cli("status", "--json").stdout)
    assert status["counts"]["done"] == 3 and status["counts"]["failed"] == 2  # rows kept
    assert status["archive"] == {"copies": len(copies), "bytes": len(copies) * size}
    assert f"archive: 0.00 GB in {len(copies)} copies" in scope.cli("status").stdout
    scope.behave("ok")
    again = scope.cli("process", "--force", "M 42_sub/f2.fit")  # its copy is made again
    assert again.returncode == 0, again.stderr
    assert (scope.archive / "M 42_sub" / "f2.fit").exists()


def test_retention_by_age_keeps_what_is_younger(scope: Scope, daemons: list[DaemonProcess]) -> None:
    scope.update(archive={"path": str(scope.archive), "keep_days": 2 / 86400})  # 2 s
    daemon = start(scope, daemons)
    frame(scope, "old.fit")
    wait_for(lambda: len(scope.runs()) == 1, timeout=20)
    old = scope.archive / "M 42_sub" / "old.fit"
    assert old.exists()
    time.sleep(2.5)  # the old frame's copy is past keep_days
    frame(scope, "new.fit")
    (pruned,) = daemon.wait_for_event("archive.pruned")
    assert daemon.stop() == 0
    assert not old.exists() and (scope.archive / "M 42_sub" / "new.fit").exists()
    assert pruned["copies"] == 1 and pruned["kept"] == 1
