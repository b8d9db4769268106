"""The checks a config value goes through: each takes (value, key, problems), records what
is wrong in `problems` and returns the value or INVALID, so that every problem is found in
one run. Sections declare theirs on their fields (`setting`)."""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import MISSING, field
from pathlib import Path
from typing import Any, Literal

from seestar_watch.sources.smburl import SMB_SCHEME, parse_smb_url

ObserverKind = Literal["auto", "native", "polling"]


class _Invalid:
    """Marks a value that failed its check (the problem is already recorded)."""


INVALID = _Invalid()
Check = Callable[[Any, str, list[str]], Any]


def expected(problems: list[str], key: str, what: str, value: Any) -> _Invalid:
    problems.append(f"{key}: expected {what}, got {quoted(value)}")
    return INVALID


# Upper bounds, each with the reason a larger value is a mistake: a wait longer than this
# is never meant, and a value past threading.TIMEOUT_MAX (about 292 years) crashes a wait.
WEEK = 7 * 86400.0
SECONDS = (WEEK, "a week")


def number(
    minimum: float, *, above: bool = False, at_most: tuple[float, str] | None = SECONDS
) -> Check:
    """A real number >= minimum (or > minimum when `above`), and at most `at_most`
    (a bound and its reason; seconds default to a week)."""
    what = f"a number {'>' if above else '>='} {minimum:g}"
    if at_most is not None:
        what += f" and at most {at_most[0]:g} ({at_most[1]})"

    def check(value: Any, key: str, problems: list[str]) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return expected(problems, key, what, value)
        if not math.isfinite(value) or value < minimum or (above and value == minimum):
            return expected(problems, key, what, value)
        if at_most is not None and value > at_most[0]:
            return expected(problems, key, what, value)
        return float(value)

    return check


def boolean(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, bool):
        return expected(problems, key, "true or false", value)
    return value


def choice(options: tuple[str, ...]) -> Check:
    """One of `options`, in any case (`INFO` is `info`)."""

    def check(value: Any, key: str, problems: list[str]) -> Any:
        if not isinstance(value, str) or value.lower() not in options:
            return expected(problems, key, "one of " + " | ".join(options), value)
        return value.lower()

    return check


def folder_path(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, str) or not value.strip():
        return expected(problems, key, "a folder path", value)
    return Path(os.path.expanduser(value))


def watch_location(value: Any, key: str, problems: list[str]) -> Any:
    """A local folder, or an smb:// URL read with no mount at all."""
    if isinstance(value, str) and value.lower().startswith(SMB_SCHEME):
        try:
            return parse_smb_url(value)
        except ValueError as exc:
            problems.append(f"{key}: not a usable smb:// URL: {exc}")
            return INVALID
    return folder_path(value, key, problems)


def command_argv(value: Any, key: str, problems: list[str]) -> Any:
    """An argv list, or a string split once with shlex (never handed to a shell)."""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            problems.append(f"{key}: cannot split the command: {exc}")
            return INVALID
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(arg, str) for arg in value)
        or not value[0].strip()
    ):
        return expected(problems, key, "a non-empty list of strings (or one string)", value)
    return tuple(value)


def setting(check: Check, default: Any = MISSING, *, factory: Any = MISSING) -> Any:
    """A dataclass field that carries the check that validates its raw value."""
    return field(default=default, default_factory=factory, metadata={"check": check})


def string_list(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        return expected(problems, key, "a list of non-empty strings", value)
    return tuple(value)


def string_map(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str)
        and k
        and "=" not in k
        and isinstance(v, str | int | float)
        and not isinstance(v, bool)
        for k, v in value.items()
    ):
        return expected(problems, key, "a mapping of NAME: value", value)
    return {k: str(v) for k, v in value.items()}


def integer(minimum: int, maximum: int, why: str) -> Check:
    """A whole number from `minimum` to `maximum` (`why` says why no more)."""
    what = f"a whole number from {minimum} to {maximum} ({why})"

    def check(value: Any, key: str, problems: list[str]) -> Any:
        if type(value) is not int or not minimum <= value <= maximum:
            return expected(problems, key, what, value)
        return value

    return check


def optional(check: Check) -> Check:
    """`check`, or null for off."""

    def maybe(value: Any, key: str, problems: list[str]) -> Any:
        return None if value is None else check(value, key, problems)

    return maybe


def text(value: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(value, str) or not value.strip():
        return expected(problems, key, "a non-empty string", value)
    return value.strip()


def optional_path(value: Any, key: str, problems: list[str]) -> Any:
    return None if value is None else folder_path(value, key, problems)


def pipeline_command(value: Any, key: str, problems: list[str]) -> Any:
    """A command whose placeholders are all known ones."""
    argv = command_argv(value, key, problems)
    if argv is INVALID:
        return INVALID
    from seestar_watch.placeholders import unknown_placeholders

    unknown = unknown_placeholders(argv)
    if unknown:
        from seestar_watch.placeholders import PLACEHOLDERS

        known = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
        problems.append(
            f"{key}: unknown placeholder {', '.join(sorted(unknown))} (known: {known};"
            " write {{ and }} for literal braces)"
        )
        return INVALID
    return argv


SHOWN = 80  # characters of a value quoted in an error message


def quoted(value: Any) -> str:
    """A value as an error message quotes it: repr, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."
