"""The command runner on real subprocesses: argv, stdin, timeouts, groups, output limits."""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from pathlib import Path

import pytest

from seestar_watch.config import parse_config
from seestar_watch.errors import ConfigError
from seestar_watch.pipeline import (
    TERM_GRACE,
    RunResult,
    child_environment,
    command_problem,
    event_json,
    resolve_program,
    run_command,
)
from seestar_watch.placeholders import expand, unknown_placeholders
from tests.conftest import wait_for


def run(
    code: str,
    *,
    timeout: float = 10,
    stdin: bytes = b"",
    abort: bool = False,
    limit: int = 64 * 1024,
) -> tuple[RunResult, list[tuple[str, str]]]:
    lines: list[tuple[str, str]] = []
    result = run_command(
        [sys.executable, "-c", code],
        stdin_data=stdin,
        env={"PATH": "/usr/bin:/bin"},
        timeout=timeout,
        should_abort=lambda: abort,
        on_line=lambda stream, line: lines.append((stream, line)),
        output_limit=limit,
    )
    return result, lines


def test_exit_code_and_output_lines_per_stream() -> None:
    result, lines = run("import sys; print('a'); print('b', file=sys.stderr); sys.exit(7)")
    assert result.outcome == "exited" and result.exit_code == 7 and not result.succeeded
    assert sorted(lines) == [("stderr", "b"), ("stdout", "a")]


def test_stdin_larger_than_a_pipe_buffer_is_delivered_whole() -> None:
    payload = json.dumps({"header": {f"K{i}": "x" * 70 for i in range(3000)}}).encode()
    result, lines = run(
        "import sys; data = sys.stdin.buffer.read(); print(len(data))", stdin=payload
    )
    assert result.succeeded
    assert lines == [("stdout", str(len(payload)))]


def test_a_command_that_ignores_stdin_is_fine() -> None:
    result, _ = run("pass", stdin=b"x" * 1_000_000)
    assert result.succeeded


def test_timeout_stops_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
        "time.sleep(600)\n"
    )
    started = time.monotonic()
    result, _ = run(code, timeout=1.0)
    assert result.outcome == "timeout"
    assert time.monotonic() - started < 10
    child = Path(f"/proc/{int(pidfile.read_text())}")

    def gone() -> bool:  # SIGKILL is delivered asynchronously: give the kernel a moment
        try:
            return "Z" in child.joinpath("stat").read_text().split()[2]
        except FileNotFoundError:
            return True

    wait_for(gone, timeout=5)


def test_sigterm_ignored_then_sigkill() -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)"
    result, _ = run(code, timeout=1.0)
    assert result.outcome == "timeout" and result.exit_code == -9


def test_a_grandchild_keeping_stdout_open_does_not_hold_the_run() -> None:
    code = (
        "import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " stdout=sys.stdout)\nprint('done')"
    )
    started = time.monotonic()
    result, lines = run(code, timeout=60)
    assert result.succeeded and ("stdout", "done") in lines
    assert time.monotonic() - started < 10


def test_output_beyond_the_limit_is_read_and_dropped() -> None:
    result, lines = run("import sys\nfor _ in range(20000): print('y' * 99)", limit=10_000)
    assert result.succeeded
    assert sum(len(line) + 1 for _, line in lines) <= 10_100
    assert result.dropped_bytes >= 2_000_000 - 10_000


def test_a_line_without_newline_is_still_logged() -> None:
    _, lines = run("import sys; sys.stdout.write('partial')")
    assert lines == [("stdout", "partial")]


def test_abort_stops_the_command() -> None:
    result, _ = run("import time; time.sleep(600)", abort=True)
    assert result.outcome == "aborted"


def test_missing_and_non_executable_commands(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    missing = run_command(
        ["/nonexistent/cmd"],
        stdin_data=b"",
        env={},
        timeout=5,
        should_abort=lambda: False,
        on_line=lambda stream, line: None,
    )
    assert (
        missing.outcome == "not_started" and missing.error == "command not found: /nonexistent/cmd"
    )
    denied = run_command(
        [str(script)],
        stdin_data=b"",
        env={},
        timeout=5,
        should_abort=lambda: False,
        on_line=lambda stream, line: None,
    )
    assert denied.outcome == "not_started" and "not executable" in denied.error
    here = Path.cwd()
    assert command_problem(["/nonexistent/cmd"], here) == "/nonexistent/cmd: no such file"
    assert "not executable" in (command_problem([str(script)], here) or "")
    assert "not found on PATH" in (command_problem(["no-such-program-xyz"], here) or "")
    assert command_problem(["python3"], here) is None


def test_event_json_is_strict_json_even_with_infinite_values() -> None:
    text = event_json({"path": "/a/caf\udce9.fit", "header": {"EXPTIME": math.inf, "X": 1.5}})
    event = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert event["header"] == {"EXPTIME": "inf", "X": 1.5}
    assert text.isascii()


def test_child_environment_scrubs_systemd_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "@x")
    monkeypatch.setenv("WATCHDOG_USEC", "1")
    env = child_environment({"EXTRA": "1"}, {"path": "/p", "source": "/s", "header": {}})
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env
    assert env["EXTRA"] == "1" and env["SEESTAR_WATCH_PATH"] == "/p"
    assert json.loads(env["SEESTAR_WATCH_EVENT"])["source"] == "/s"


VALUES = {
    "path": "/archive/M 42_sub/$(x).fit",
    "source": "/share/x.fit",
    "name": "-x.fit",
    "stem": "-x",
    "relpath": "M 42_sub/-x.fit",
    "size_kb": "4055.6",
}


def test_placeholders_are_replaced_inside_each_argument_only() -> None:
    argv = expand(["tool", "--in={path}", "{stem}_out.csv", "{{literal}}", "{size_kb}"], VALUES)
    assert argv == ["tool", "--in=/archive/M 42_sub/$(x).fit", "-x_out.csv", "{literal}", "4055.6"]


def test_unknown_placeholders_are_config_errors() -> None:
    assert unknown_placeholders(["a", "{path}", "{nme}", "{{ok}}", "{0}"]) == {"{nme}", "{0}"}
    raw = {"image_watcher": {"watch_path": "/x"}, "pipeline": {"command": ["a", "{file}"]}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, Path("c.yaml"))
    assert caught.value.problems[0].startswith("pipeline.command: unknown placeholder {file}")


TRAPS_TERM = (
    "import signal, sys, time\n"
    "def clean_up(*_):\n"
    "    print('cleaning up', flush=True)\n"
    "    time.sleep(0.3)\n"
    "    print('cleaned', flush=True)\n"
    "    sys.exit(7)\n"
    "signal.signal(signal.SIGTERM, clean_up)\n"
    "print('started', flush=True)\n"
    "while True: time.sleep(0.05)\n"
)


@pytest.mark.parametrize("how", ["timeout", "abort"])
def test_a_command_that_traps_term_cleans_up_and_its_last_words_are_logged(how: str) -> None:
    # the group gets SIGTERM while its output is still read: no SIGPIPE (-13), nothing lost
    started = time.monotonic()
    aborting = {"now": False}

    def should_abort() -> bool:
        if how == "abort" and time.monotonic() - started > 0.5:
            aborting["now"] = True
        return aborting["now"]

    lines: list[tuple[str, str]] = []
    result = run_command(
        [sys.executable, "-c", TRAPS_TERM],
        stdin_data=b"",
        env={"PATH": "/usr/bin:/bin"},
        timeout=0.5 if how == "timeout" else 30,
        should_abort=should_abort,
        on_line=lambda stream, line: lines.append((stream, line)),
    )
    assert result.outcome == ("timeout" if how == "timeout" else "aborted")
    assert result.exit_code == 7  # its own exit after cleaning up, not -13 (SIGPIPE)
    assert [line for _, line in lines] == ["started", "cleaning up", "cleaned"]


def test_a_command_that_ignores_term_is_killed_after_the_grace() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    started = time.monotonic()
    result, _ = run(code, timeout=0.3)
    assert result.outcome == "timeout" and result.exit_code == -9
    assert time.monotonic() - started < 0.3 + TERM_GRACE + 3


def test_command_problem_looks_for_scripts_in_the_config_folder(tmp_path: Path) -> None:
    assert command_problem(["python3", "-u", "my_photometry.py", "{path}"], tmp_path) == (
        "my_photometry.py: no such file (looked in"
        f" {tmp_path}, the config file's folder, where the command runs)"
    )
    (tmp_path / "my_photometry.py").write_text("print('hi')\n")
    assert command_problem(["python3", "-u", "my_photometry.py", "{path}"], tmp_path) is None
    assert command_problem(["python3", "-m", "some.module", "{path}"], tmp_path) is None
    assert command_problem(["bash", "{path}"], tmp_path) is None
    assert "no such file" in (command_problem(["./photometry.sh"], tmp_path) or "")
    assert command_problem(["seestar-watch", "quicklook", "{path}"], tmp_path) is None


def test_seestar_watch_as_the_program_is_this_seestar_watch(tmp_path: Path) -> None:
    # a virtual environment's bin/ is not on a service's PATH: run this installation
    lines: list[tuple[str, str]] = []
    result = run_command(
        resolve_program(["seestar-watch", "--version"]),
        stdin_data=b"",
        env={"PATH": "/nonexistent"},
        timeout=30,
        should_abort=lambda: False,
        on_line=lambda stream, line: lines.append((stream, line)),
    )
    assert result.succeeded, lines
    assert lines[0][1].startswith("seestar-watch, version")


def test_the_command_runs_in_the_given_folder(tmp_path: Path) -> None:
    lines: list[tuple[str, str]] = []
    run_command(
        [sys.executable, "-c", "import os; print(os.getcwd())"],
        stdin_data=b"",
        env={},
        timeout=10,
        cwd=tmp_path,
        should_abort=lambda: False,
        on_line=lambda stream, line: lines.append((stream, line)),
    )
    assert lines == [("stdout", str(tmp_path))]


def test_a_command_finishing_never_stops_another_workers_command_being_started(
    tmp_path: Path,
) -> None:
    """After each run the strays a command left are stopped; a command another worker has
    just started (forked, not yet known) is no stray. Two workers: one runs short commands
    as fast as it can, the other runs commands that must each last 0.2 s."""
    from seestar_watch.config import PipelineConfig
    from seestar_watch.executor import Job, LocalExecutor
    from seestar_watch.log import get_logger

    def executor(command: list[str]) -> LocalExecutor:
        pipeline = PipelineConfig(command=tuple(command), timeout=30)
        return LocalExecutor(pipeline, tmp_path / "c.yaml", lambda: False, logger=get_logger("t"))

    event = {"path": "/x.fit", "source": "/x.fit", "relpath": "x.fit", "header": {}, "size_kb": 1}
    job = Job("t-1", 1, event, {"path": "/x.fit"})
    quick, steady = executor(["true"]), executor(["sleep", "0.2"])
    done = threading.Event()

    def hurry() -> None:
        while not done.is_set():
            quick.run(job, lambda stream, line: None, lambda pid: None)

    hurrying = threading.Thread(target=hurry)
    hurrying.start()
    try:
        runs = [steady.run(job, lambda stream, line: None, lambda pid: None).run for _ in range(12)]
    finally:
        done.set()
        hurrying.join()
    assert [(run.exit_code, run.duration >= 0.2) for run in runs] == [(0, True)] * 12
