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
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

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


def child_environment(extra: Mapping[str, str], event: Mapping[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(extra)
    env["SEESTAR_WATCH_PATH"] = str(event["path"])
    env["SEESTAR_WATCH_SOURCE"] = str(event["source"])
    env["SEESTAR_WATCH_EVENT"] = event_json(event)
    return env


def command_problem(program: str) -> str | None:
    """Why `program` cannot be started from here (for check-config), or None."""
    if "{" in program:
        return None  # the program itself comes from a placeholder: known only per frame
    if os.sep in program:
        if not os.path.isfile(program):
            return f"{program}: no such file"
        if not os.access(program, os.X_OK):
            return f"{program}: not executable (chmod +x it)"
        return None
    if shutil.which(program) is None:
        return f"{program}: not found on PATH ({os.environ.get('PATH', '')})"
    return None


def run_command(
    argv: list[str],
    *,
    stdin_data: bytes,
    env: Mapping[str, str],
    timeout: float,
    should_abort: Callable[[], bool],
    on_line: OnLine,
    output_limit: int = OUTPUT_LIMIT,
) -> RunResult:
    """Run argv to completion, timeout or abort; never raises for anything the command does."""
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        return RunResult("not_started", None, 0.0, _start_error(argv[0], exc))
    output = _Output(on_line, output_limit)
    outcome = _pump(process, stdin_data, output, started + timeout, should_abort)
    if outcome != "exited":
        _stop_group(process)
    exit_code = process.wait()
    output.flush()
    return RunResult(outcome, exit_code, time.monotonic() - started, dropped_bytes=output.dropped)


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
    """Feed stdin and read output until the command is done; returns the outcome."""
    streams: dict[IO[bytes], str] = {process.stdout: "stdout", process.stderr: "stderr"}  # type: ignore[dict-item]
    with selectors.DefaultSelector() as selector:
        for stream, name in streams.items():
            os.set_blocking(stream.fileno(), False)
            selector.register(stream, selectors.EVENT_READ, name)
        pending = memoryview(stdin_data)
        assert process.stdin is not None
        os.set_blocking(process.stdin.fileno(), False)
        selector.register(process.stdin, selectors.EVENT_WRITE, "stdin")
        exited_at: float | None = None
        try:
            while True:
                now = time.monotonic()
                if exited_at is None and process.poll() is not None:
                    exited_at = now
                if exited_at is not None and (
                    not selector.get_map() or now - exited_at > DRAIN_AFTER_EXIT
                ):
                    return "exited"
                if now >= deadline:
                    return "timeout"
                if should_abort():
                    return "aborted"
                for key, _ in selector.select(min(TICK, deadline - now)):
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


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the command's whole process group, then SIGKILL after a grace."""
    _signal_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(TERM_GRACE)
    _signal_group(process.pid, signal.SIGKILL)  # whatever of the group is left


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
