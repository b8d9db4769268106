"""What `run` shows on a terminal: one readable line per frame, and what needs a look.

The records a night makes (dozens a frame, every line of the command's output) stay whole
in `--verbose` and in the JSON lines journald and log files get; on a terminal a person
reads the frames as they arrive, settle and end, the share coming and going, and every
warning and error, each on one line, names escaped:

    21:20:46  settled   M 94_sub/Light_M 94_10.0s_IRCUT_20250326-212046.fit
    21:20:48  done      M 94_sub/Light_M 94_10.0s_IRCUT_20250326-212046.fit  1.2 s  stars=41

`configure` sets up the command line's rendering of every record: those lines, every record
with its facts (`console`), or JSON lines.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from datetime import datetime
from typing import Any, TextIO

import structlog

from seestar_watch.log import LEVELS, Event, drop_none, escape
from seestar_watch.results import useful_fields

Line = Callable[[MutableMapping[str, Any]], str]


def _frame(event: MutableMapping[str, Any]) -> str:
    return escape(str(event.get("frame") or event.get("path") or ""))


def _finished(event: MutableMapping[str, Any]) -> str:
    took = event.get("duration_s")
    took = f"  {took:g} s" if isinstance(took, int | float) else ""
    if event.get("outcome") == "aborted":
        return f"stopped   {_frame(event)}{took} (the daemon is stopping: it runs again)"
    return f"done      {_frame(event)}{took}{_fields(event.get('result'))}"


def _fields(result: Any) -> str:
    """The result fields `status` shows too."""
    shown = useful_fields(result) if isinstance(result, dict) else ""
    return f"  {escape(shown)}" if shown else ""


LINES: dict[str, Line] = {
    "daemon.started": lambda e: f"started   watching {escape(str(e.get('watch_path')))}",
    "watcher.started": lambda e: f"watching  {e.get('observer')}: {escape(str(e.get('reason')))}",
    "dashboard.started": lambda e: f"page      {e.get('url')}",
    "ledger.baseline": lambda e: (
        f"first start: {e.get('skipped')} frames already there are skipped, {e.get('run')} will run"
    ),
    "share.ready": lambda e: "share     up",
    "share.restored": lambda e: "share     back",
    "frame.settled": lambda e: f"settled   {_frame(e)}",
    "pipeline.finished": _finished,
    "frame.second_spelling": lambda e: (
        f"skipped   {_frame(e)}: the same frame as {escape(str(e.get('same_as')))}"
    ),
    "archive.pruned": lambda e: (
        f"archive   {e.get('copies')} old copies removed ({e.get('freed_mb')} MB)"
    ),
    "archive.space_again": lambda e: "archive   room again: frames go on",
    "daemon.stopping": lambda e: (
        "stopping  (a running command may finish; Ctrl-C again stops at once)"
    ),
    "daemon.stopped": lambda e: "stopped",
}
# failures and waits are warnings or errors, and their own lines
LEVELED: dict[str, Line] = {
    "frame.retry_scheduled": lambda e: (
        f"retry     {_frame(e)}: {escape(str(e.get('reason')))} (again in {e.get('retry_in_s')} s)"
    ),
    "frame.failed": lambda e: f"FAILED    {_frame(e)}: {escape(str(e.get('reason')))}",
    "frame.rejected": lambda e: f"rejected  {_frame(e)}: {escape(str(e.get('reason')))}",
    "share.lost": lambda e: f"share     LOST: {escape(str(e.get('reason')))}",
    "share.waiting": lambda e: f"share     waiting: {escape(str(e.get('reason')))}",
}


def shown(record: logging.LogRecord) -> bool:
    """The logging filter: what a person watching the night needs to see."""
    name = record.msg.name if isinstance(record.msg, Event) else str(record.msg)
    if name == "pipeline.finished":  # a failure is said by its retry, failure or rejection
        done = getattr(record, "outcome", None) == "exited" and getattr(record, "exit_code", 1) == 0
        return done or getattr(record, "outcome", None) == "aborted"
    return record.levelno >= logging.WARNING or name in LINES


QUIET = frozenset(
    {"timestamp", "level", "logger", "event", "log_level", "_record", "_from_structlog"}
)


def render_line(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """The structlog renderer: the time, then the event as a person reads it."""
    name = str(event.get("event"))
    line = (LINES.get(name) or LEVELED.get(name) or _generic)(event)
    clock = datetime.now().strftime("%H:%M:%S")
    trace = f"\n{event['exception']}" if event.get("exception") else ""
    return f"{clock}  {line}{trace}"


def _generic(event: MutableMapping[str, Any]) -> str:
    """Any other warning or error: its level, its name and its facts, on one line."""
    level = str(event.get("level") or event.get("log_level") or "").upper()
    facts = " ".join(
        f"{key}={escape(str(value))}"
        for key, value in event.items()
        if key not in QUIET and key != "exception" and value is not None
    )
    return f"{level:<9} {escape(str(event.get('event')))}  {facts}".rstrip()


# -- the command line's rendering of every record -------------------------------------


def _escape_strings(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and key != "exception":
            event[key] = escape(value)
    return event


def _bare_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """For our rendering: the event's name alone (its facts are the record's attributes)."""
    record = event.get("_record")
    if record is not None and isinstance(record.msg, Event):
        event["event"] = record.msg.name
    return event


def _timestamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Local time with its offset from UTC: a log read in another zone, or across a change
    of summer time, still says when."""
    event["timestamp"] = datetime.now().astimezone().isoformat(timespec="milliseconds")
    return event


def configure(
    fmt: str = "auto", level: str = "info", stream: TextIO | None = None, *, verbose: bool = False
) -> None:
    """Set up structlog (and stdlib logging, which watchdog uses) for the command line.

    `fmt` is auto | lines | console | json: `lines` is one readable line per frame and
    warnings; `console` every record with all its facts; auto means lines on a terminal
    (console with `verbose`), JSON lines otherwise (journald, files).
    """
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = ("console" if verbose else "lines") if stream.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        drop_none,
        structlog.processors.add_log_level,
        _timestamp,
    ]
    renderer: list[Any]
    if fmt == "json":
        renderer = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    elif fmt == "lines":
        renderer = [structlog.processors.format_exc_info, render_line]
    else:
        renderer = [_escape_strings, structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    structlog.configure(
        processors=shared + renderer,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # seestar_watch's own records (their context is in the record's extra attributes),
    # and watchdog's inotify overflows and failed polls, are rendered the same way, so a
    # JSON log stays pure JSON lines.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
            foreign_pre_chain=[
                _bare_event,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                *shared[1:],
            ],
        )
    )
    if fmt == "lines":
        handler.addFilter(shown)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(LEVELS[level], logging.WARNING))  # other libraries: warnings and up
    logging.getLogger("seestar_watch").setLevel(LEVELS[level])
