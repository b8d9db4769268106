"""Log records stay one line each, whatever a file name holds."""

from __future__ import annotations

import io
import json
import logging

import structlog

from seestar_watch import log


def render(fmt: str, **values: object) -> str:
    stream = io.StringIO()
    log.configure(fmt, "info", stream)
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
    log.configure("json", "warning", stream)
    try:
        structlog.get_logger().info("quiet")
        structlog.get_logger().warning("loud")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["loud"]


def test_a_context_key_named_like_a_log_record_attribute_is_kept_not_a_crash() -> None:
    stream = io.StringIO()
    log.configure("json", "info", stream)
    try:
        log.get_logger("seestar_watch.test").warning("x.happened", process="solver", name="n")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    entry = json.loads(stream.getvalue())
    assert entry["process_"] == "solver" and entry["name_"] == "n"
