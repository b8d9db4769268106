"""Log records stay one line each, whatever a file name holds."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import structlog

from seestar_watch import log, terminal


def render(fmt: str, **values: object) -> str:
    stream = io.StringIO()
    terminal.configure(fmt, "info", stream)
    try:
        structlog.get_logger().info("frame.settled", **values)
        logging.getLogger("watchdog.observers.inotify_c").warning("queue overflow")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    return stream.getvalue()


HOSTILE = "M 42_sub/new\nline\r\x1b[31m\udcff.fit"


def test_console_escapes_control_characters_and_undecodable_bytes() -> None:
    text = render("console", path=HOSTILE)
    lines = text.splitlines()
    assert len(lines) == 2
    assert "frame.settled" in lines[0] and "\\n" in lines[0] and "\\x1b" in lines[0]
    assert "queue overflow" in lines[1]


def test_json_lines_with_stdlib_records_too() -> None:
    lines = render("json", path=HOSTILE).splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["path"] == HOSTILE and first["event"] == "frame.settled"
    assert first["level"] == "info" and "timestamp" in first
    assert second["event"] == "queue overflow" and second["level"] == "warning"
    assert second["logger"] == "watchdog.observers.inotify_c"


def test_levels_filter() -> None:
    stream = io.StringIO()
    terminal.configure("json", "warning", stream)
    try:
        structlog.get_logger().info("quiet")
        structlog.get_logger().warning("loud")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["loud"]


def test_a_context_key_named_like_a_log_record_attribute_is_kept_not_a_crash() -> None:
    stream = io.StringIO()
    terminal.configure("json", "info", stream)
    try:
        log.get_logger("seestar_watch.test").warning("x.happened", process="solver", name="n")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    entry = json.loads(stream.getvalue())
    assert entry["process_"] == "solver" and entry["name_"] == "n"


def test_on_a_terminal_run_says_one_readable_line_per_frame(tmp_path: Path) -> None:
    """Under a real pseudo-terminal: the frame's lines, not every record; JSON lines (with a
    zone in each timestamp) when the output is not a terminal."""
    import os
    import pty
    import select
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import write_frame
    from tests.harness import Scope

    scope = Scope(tmp_path)
    scope.update(logging={"format": "auto", "level": "info"})
    primary, secondary = pty.openpty()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "seestar_watch", "run", "-c", str(scope.config_path)],
        stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary,
    )  # fmt: skip
    os.close(secondary)
    said = b""

    def read_until(text: bytes, timeout: float = 20) -> None:
        nonlocal said
        deadline = time.monotonic() + timeout
        while text not in said and time.monotonic() < deadline:
            if select.select([primary], [], [], 0.2)[0]:
                said += os.read(primary, 65536)
        assert text in said, said.decode(errors="replace")

    try:
        read_until(b"watching  native")
        write_frame(scope.share / "M 42_sub" / "a.fit")
        write_frame(scope.share / "M 42_sub" / "bad.fit", b"not a frame" * 100)
        read_until(b"done      M 42_sub/a.fit")
        read_until(b"rejected  M 42_sub/bad.fit: not a FITS file")
        daemon.send_signal(signal.SIGTERM)
        read_until(b"stopped")
    finally:
        daemon.kill()
        daemon.wait(10)
        os.close(primary)
    lines = said.decode().replace("\r", "").splitlines()
    assert any(line.endswith("settled   M 42_sub/a.fit") for line in lines)
    assert "pipeline.output" not in said.decode() and "pipeline.started" not in said.decode()
    assert all(len(line) < 200 for line in lines), lines
    # not a terminal: every record as JSON, its time with its zone
    done = scope.cli("run", "--once")
    record = json.loads(done.stderr.splitlines()[0])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", record["timestamp"])
