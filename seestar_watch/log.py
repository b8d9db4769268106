"""Logging: records through the standard `logging` module, rendered by structlog.

Library code (ImageWatcher used from a script included) logs through loggers named
`seestar_watch.*` of the standard `logging` module, so `logging.basicConfig(...)` or
pytest's `caplog` sees every record; the event name is the message and the context
rides along as the record's attributes. The command line's `configure` renders those
records with structlog: console on a terminal, JSON lines otherwise.

File names on a guest share are untrusted: a newline in one must never start a
second log record. JSON escapes them by itself; for the console every string
value with a character that is not printable is shown escaped, on one line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def escape(value: str) -> str:
    """One printable line: control characters, newlines and undecodable bytes escaped."""
    if value.isprintable():
        return value
    return repr(value)[1:-1]


def count_of(number: int, one: str, many: str | None = None) -> str:
    """ "1 folder", "2 folders", "1 retry", "2 retries": for lines a person reads."""
    return f"{number} {one if number == 1 else many or one + 's'}"


class Repeats:
    """A problem that comes back at every retry (a listing that fails each minute) is said
    once per kind (an exception's type and message, or a name), until `clear()` says it
    is over. At most LIMIT kinds are remembered: a hostile share can make many, and past
    that nothing more is said."""

    LIMIT = 1000

    def __init__(self) -> None:
        self._said: set[str] = set()

    def first(self, kind: BaseException | str) -> bool:
        """True the first time this kind of problem is seen since the last clear()."""
        if isinstance(kind, BaseException):
            kind = f"{type(kind).__name__}: {kind}"[:200]
        if kind in self._said or len(self._said) >= self.LIMIT:
            return False
        self._said.add(kind)
        return True

    def clear(self) -> bool:
        """Forget what was said; True when something had been."""
        said, self._said = bool(self._said), set()
        return said


def _escape_strings(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and key != "exception":
            event[key] = escape(value)
    return event


def _drop_none(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`reason=None` says nothing: a key with no value is left out of the line."""
    for key in [key for key, value in event.items() if value is None]:
        del event[key]
    return event


# attributes every logging.LogRecord has: a context key of one of these names would make
# logging raise (KeyError: "Attempt to overwrite ... in LogRecord")
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def _clear_of_record_attributes(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in [key for key in event if key in _RECORD_ATTRIBUTES]:
        event[f"{key}_"] = event.pop(key)
    return event


def get_logger(name: str) -> Any:
    """A structlog logger (log.info("frame.settled", path=...)) that hands each call to the
    standard `logging` logger `name` as one record; no global structlog configuration."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[_drop_none, _clear_of_record_attributes, structlog.stdlib.render_to_log_kwargs],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog (and stdlib logging, which watchdog uses) for the command line.

    `fmt` is auto | console | json; auto means console on a terminal, JSON lines otherwise.
    """
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _drop_none,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=False),
    ]
    renderer: list[Any]
    if fmt == "json":
        renderer = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
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
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                *shared[1:],
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(LEVELS[level], logging.WARNING))  # other libraries: warnings and up
    logging.getLogger("seestar_watch").setLevel(LEVELS[level])
