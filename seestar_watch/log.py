"""Logging: records through the standard `logging` module, shaped by structlog.

Library code (ImageWatcher used from a script included) logs through loggers named
`seestar_watch.*` of the standard `logging` module, so `logging.basicConfig(...)` or
pytest's `caplog` sees every record; the event name is the message and the context
rides along as the record's attributes. The command line renders those records
(terminal.configure): readable lines on a terminal, JSON lines otherwise.

File names on a guest share are untrusted: a newline in one must never start a
second log record. JSON escapes them by itself; for the console every string
value with a character that is not printable is shown escaped, on one line.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

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


def drop_none(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
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


class Event(str):
    """A record's message: its event name with its facts, `frame.rejected frame='M 42_sub/x.fit'
    reason='...'`, so that any `logging` configuration (a script's `basicConfig()`) says which
    file and why; `.name` is the bare event, which the command line's rendering shows."""

    name: str

    def __new__(cls, name: str, facts: dict[str, Any]) -> Event:
        shown = "".join(f" {key}={_fact(value)}" for key, value in facts.items())
        event = super().__new__(cls, escape(name) + shown)
        event.name = name
        return event


def _fact(value: Any) -> str:
    """A fact as the message shows it: a string quoted when it needs to be, one line always."""
    if not isinstance(value, str):
        return escape(repr(value))
    return repr(value) if " " in value or not value.isprintable() or not value else value


def _to_record(_: Any, __: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of one `logging` call: the Event as the message, the facts also
    as the record's attributes (what the JSON lines carry)."""
    keywords = {key: event.pop(key) for key in ("exc_info", "stack_info") if key in event}
    name = event.pop("event")
    facts = {k: v for k, v in event.items() if not k.startswith("_")}
    return {"msg": Event(name, facts), "extra": dict(event), **keywords}


def get_logger(name: str) -> Any:
    """A structlog logger (log.info("frame.settled", path=...)) that hands each call to the
    standard `logging` logger `name` as one record; no global structlog configuration.
    A call below the logger's level costs a level check, nothing more."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[
            structlog.stdlib.filter_by_level,
            drop_none,
            _clear_of_record_attributes,
            _to_record,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
