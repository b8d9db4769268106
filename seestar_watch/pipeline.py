"""Running the pipeline command for one frame: no shell, its own process group, bounded.

The command gets the frame three ways: placeholders in its argv, JSON on stdin,
and SEESTAR_WATCH_* environment variables. It runs in a new session (its own
process group) so that a timeout or shutdown stops it *and* what it started:
SIGTERM to the group, then SIGKILL after a short grace. One selector loop feeds
stdin and reads stdout and stderr, so a child that floods output costs no
memory, and a grandchild that keeps stdout open cannot hold the daemon: once
the command itself has exited, the pipes are given a moment and then closed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from seestar_watch.config import CONFIG_ENV
from seestar_watch.results import RESULT_ENV

TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL to the group
DRAIN_AFTER_EXIT = 1.0  # how long a grandchild may keep the pipes open after the command ends
OUTPUT_LIMIT = 64 * 1024  # bytes of output logged per run; the rest is read and dropped
TICK = 0.1
# Inherited from a systemd service: the child must not talk to systemd as if it were us.
SCRUBBED_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

OnLine = Callable[[str, str], None]  # (stream, line)


@dataclass(frozen=True)
class RunResult:
    outcome: str  # "exited" | "timeout" | "aborted" | "not_started"
    exit_code: int | None
    duration: float
    error: str = ""
    dropped_bytes: int = 0
    pid: int | None = None  # the command's process (and process group), once started

    @property
    def succeeded(self) -> bool:
        return self.outcome == "exited" and self.exit_code == 0


def event_json(event: Mapping[str, Any]) -> str:
    """The event as strict JSON: non-finite header floats become strings, other bytes escaped."""
    return json.dumps(_finite(event), ensure_ascii=True, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    return value


def child_environment(
    extra: Mapping[str, str],
    event: Mapping[str, Any],
    result_path: str | None = None,
    config_path: str | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    if config_path is not None:  # a stage of ours (photometry) reads the daemon's own config
        env[CONFIG_ENV] = config_path
    env.update(extra)
    env["SEESTAR_WATCH_PATH"] = str(event["path"])
    env["SEESTAR_WATCH_SOURCE"] = str(event["source"])
    env["SEESTAR_WATCH_EVENT"] = event_json(event)
    if result_path is not None:  # where the command may leave its measurements (results.py)
        env[RESULT_ENV] = result_path
    return env


SELF = "seestar-watch"
# Interpreters whose first plain argument is a script file that must exist.
INTERPRETERS = re.compile(r"(python|pypy)[0-9.]*|bash|sh|dash|zsh|perl|ruby|node|Rscript|julia")


def resolve_program(argv: Sequence[str]) -> list[str]:
    """The argv to start: `seestar-watch` means this very seestar-watch, wherever it is
    installed (a virtual environment is not on a service's PATH)."""
    if argv and argv[0] == SELF:
        return [sys.executable, "-m", "seestar_watch", *argv[1:]]
    return list(argv)


def command_problem(argv: Sequence[str], folder: Path) -> str | None:
    """Why the command cannot be started from `folder`, its working folder, or None.

    Checks the program and, for an interpreter (`python3 my_photometry.py`), its script:
    a relative path is looked up in `folder` (the config file's folder), as when it runs.
    """
    problem = _program_problem(argv[0], folder)
    if problem:
        return problem
    script = _script_argument(argv)
    if script is not None and not (folder / script).is_file():
        return f"{script}: no such file" + _looked_in(script, folder)
    return None


def _program_problem(program: str, folder: Path) -> str | None:
    if "{" in program or program == SELF:
        return None  # from a placeholder (known only per frame), or this very program
    if os.sep in program:
        path = folder / program
        if not path.is_file():
            return f"{program}: no such file" + _looked_in(program, folder)
        if not os.access(path, os.X_OK):
            return f"{program}: not executable (chmod +x {path})"
        return None
    if shutil.which(program) is None:
        return f"{program}: not found on PATH ({os.environ.get('PATH', '')})"
    return None


def _looked_in(path: str, folder: Path) -> str:
    if os.path.isabs(path):
        return ""
    return f" (looked in {folder}, the config file's folder, where the command runs)"


def _script_argument(argv: Sequence[str]) -> str | None:
    """The script an interpreter is given (`python3 -u x.py` -> x.py), or None."""
    if not INTERPRETERS.fullmatch(os.path.basename(argv[0])):
        return None
    for previous, argument in itertools.pairwise(argv):
        if previous in ("-m", "-c", "-e", "-E", "--eval"):
            return None  # a module or inline code, not a file
        if not argument.startswith("-"):
            return None if "{" in argument else argument
    return None


def run_command(
    argv: list[str],
    *,
    stdin_data: bytes,
    env: Mapping[str, str],
    timeout: float,
    cwd: Path | None = None,
    should_abort: Callable[[], bool],
    on_line: OnLine,
    output_limit: int = OUTPUT_LIMIT,
    before_exec: Callable[[], None] | None = None,
    on_started: Callable[[int], None] | None = None,
    umask: int = -1,
    start_guard: contextlib.AbstractContextManager[Any] | None = None,
    register: Callable[[int], object] | None = None,
) -> RunResult:
    """Run argv to completion, timeout or abort; never raises for anything the command does.

    `before_exec` runs in the child before exec (e.g. to die with the daemon);
    `on_started` gets the command's pid, which is also its process group's id; `umask`
    (unless -1) is the command's. `register` gets the pid while `start_guard` is held
    around the start (children.starting: a stray-hunting thread never sees a command
    that is started but not yet known)."""
    started = time.monotonic()
    try:
        with start_guard or contextlib.nullcontext():
            process = _spawn(argv, env, cwd, umask, before_exec)
            if register is not None:  # before another thread may look for strays
                register(process.pid)
    except OSError as exc:
        return RunResult("not_started", None, 0.0, _start_error(argv[0], exc))
    if on_started is not None:
        on_started(process.pid)
    output = _Output(on_line, output_limit)
    outcome = _pump(process, stdin_data, output, started + timeout, should_abort)
    if outcome != "exited":
        _signal_group(process.pid, signal.SIGKILL)  # whatever of the group is left
    exit_code = process.wait()
    output.flush()
    return RunResult(
        outcome,
        exit_code,
        time.monotonic() - started,
        dropped_bytes=output.dropped,
        pid=process.pid,
    )


def _spawn(
    argv: list[str],
    env: Mapping[str, str],
    cwd: Path | None,
    umask: int,
    before_exec: Callable[[], None] | None,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        close_fds=True,
        umask=umask,
        # before_exec only makes one system call (prctl), taking no lock that another
        # thread could hold across the fork
        preexec_fn=before_exec,  # noqa: PLW1509
    )


def _start_error(command: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {command}"
    if isinstance(exc, PermissionError):
        return f"command not executable: {command}"
    return f"cannot start {command}: {exc.strerror or exc}"


def _pump(
    process: subprocess.Popen[bytes],
    stdin_data: bytes,
    output: _Output,
    deadline: float,
    should_abort: Callable[[], bool],
) -> str:
    """Feed stdin and read output until the command is done; returns the outcome.

    On a timeout or an abort the group gets SIGTERM *while its output is still read*:
    a command that traps TERM to clean up must not die of SIGPIPE, and its last words
    are logged. SIGKILL follows after TERM_GRACE; the pipes are closed only at the end.
    """
    streams: dict[IO[bytes], str] = {process.stdout: "stdout", process.stderr: "stderr"}  # type: ignore[dict-item]
    with selectors.DefaultSelector() as selector:
        for stream, name in streams.items():
            os.set_blocking(stream.fileno(), False)
            selector.register(stream, selectors.EVENT_READ, name)
        pending = memoryview(stdin_data)
        assert process.stdin is not None
        os.set_blocking(process.stdin.fileno(), False)
        selector.register(process.stdin, selectors.EVENT_WRITE, "stdin")
        outcome, exited_at, kill_at = "exited", None, math.inf
        try:
            while True:
                now = time.monotonic()
                if exited_at is None and process.poll() is not None:
                    exited_at = now
                if exited_at is not None and (
                    not selector.get_map() or now - exited_at > DRAIN_AFTER_EXIT
                ):
                    return outcome
                if outcome == "exited" and (now >= deadline or should_abort()):
                    outcome = "timeout" if now >= deadline else "aborted"
                    _signal_group(process.pid, signal.SIGTERM)
                    kill_at = now + TERM_GRACE
                elif exited_at is None and now >= kill_at:
                    _signal_group(process.pid, signal.SIGKILL)
                    kill_at = math.inf
                for key, _ in selector.select(min(TICK, max(0.0, deadline - now)) or TICK):
                    pending = _service(selector, key, pending, output)
        finally:
            for key in list(selector.get_map().values()):
                selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]


def _service(
    selector: selectors.BaseSelector,
    key: selectors.SelectorKey,
    pending: memoryview,
    output: _Output,
) -> memoryview:
    stream: IO[bytes] = key.fileobj  # type: ignore[assignment]
    if key.data == "stdin":
        try:
            pending = pending[os.write(stream.fileno(), pending[:65536]) :] if pending else pending
        except (BrokenPipeError, ConnectionResetError):
            pending = pending[:0]  # the command does not read its stdin: that is its choice
        if not pending:
            selector.unregister(stream)
            stream.close()
        return pending
    try:
        data = os.read(stream.fileno(), 65536)
    except BlockingIOError:
        return pending
    if data:
        output.feed(key.data, data)
    else:
        selector.unregister(stream)
        stream.close()
    return pending


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class _Output:
    """Splits output into lines for the log, up to a byte limit; counts what it drops."""

    def __init__(self, on_line: OnLine, limit: int) -> None:
        self._on_line = on_line
        self._room = limit
        self._partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self.dropped = 0

    def feed(self, stream: str, data: bytes) -> None:
        if self._room <= 0:
            self.dropped += len(data)
            return
        kept, self.dropped = data[: self._room], self.dropped + max(0, len(data) - self._room)
        self._room -= len(kept)
        *lines, self._partial[stream] = (self._partial[stream] + kept).split(b"\n")
        for line in lines:
            self._emit(stream, line)
        if self._room <= 0:
            self._flush_stream(stream)

    def flush(self) -> None:
        for stream in self._partial:
            self._flush_stream(stream)

    def _flush_stream(self, stream: str) -> None:
        if self._partial[stream]:
            self._emit(stream, self._partial[stream])
            self._partial[stream] = b""

    def _emit(self, stream: str, line: bytes) -> None:
        self._on_line(stream, line.rstrip(b"\r").decode("utf-8", errors="replace"))
