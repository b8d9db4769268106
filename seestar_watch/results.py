"""A pipeline's result: one JSON object the command may leave in $SEESTAR_WATCH_RESULT.

The same convention as CI systems' output files: the daemon makes an empty file of
its own for each run and passes its path; a command that has measurements to show
(FWHM, background, stars, the target's magnitude...) writes one JSON object of
scalars into it. After a successful run the file is read (bounded, never followed
through a link, never waited on) and removed; what it holds is recorded in the
ledger as the frame's `result`, which `status`, `export` and the dashboard show.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

RESULT_ENV = "SEESTAR_WATCH_RESULT"
RESULT_LIMIT = 64 * 1024  # bytes; a bigger file is not a summary of one frame
Scalar = str | int | float | bool | None
Result = dict[str, Scalar]


class ResultProblem(ValueError):
    """Why a result file was ignored (one line, for a warning naming the frame)."""


@contextmanager
def result_file() -> Iterator[str]:
    """The path of a new, empty file only this user may read, in a folder of its own that
    is removed on the way out with whatever the command left there (it may put a folder,
    a FIFO or a link in the file's place: none outlives the run)."""
    folder = tempfile.mkdtemp(prefix="seestar-watch-result-")
    path = os.path.join(folder, "result.json")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    try:
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # never follows a link it finds


def read_result(path: str) -> Result | None:
    """The object in the file, None when the command wrote nothing; ResultProblem when
    what it wrote is not one JSON object of numbers, strings, booleans and nulls."""
    try:
        # O_NONBLOCK: a command that put a FIFO there must not hold the worker
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ResultProblem(f"cannot open it: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ResultProblem("it is not a regular file")
        data = _read_at_most(fd, RESULT_LIMIT + 1)
    finally:
        os.close(fd)
    if len(data) > RESULT_LIMIT:
        raise ResultProblem(f"it is larger than {RESULT_LIMIT // 1024} KiB")
    if not data.strip():
        return None
    return parse_result(data)


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def parse_result(data: bytes) -> Result:
    """One JSON object of scalars (NaN and infinities are not JSON: refused)."""
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ResultProblem("it is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ResultProblem(f"it is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise ResultProblem(f"it holds a JSON {_kind(value)}, not an object")
    for key, item in value.items():
        if isinstance(item, dict | list):
            raise ResultProblem(
                f"the value of {key!r} is a JSON {_kind(item)}; only numbers, strings,"
                " booleans and nulls are kept"
            )
        if isinstance(item, float) and not math.isfinite(item):  # 1e999
            raise ResultProblem(f"the value of {key!r} is not a finite number")
    return value


def _refuse_constant(name: str) -> Any:
    raise ResultProblem(f"it holds {name}, which is not JSON (write null instead)")


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else "null"
    )


def numeric_fields(result: Result | None) -> dict[str, float]:
    """The fields of a result that can be drawn: numbers, not booleans."""
    if not result:
        return {}
    return {
        key: float(value)
        for key, value in result.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


# -- a result as people read it: the fields `status`, `run`'s lines and the page show first ---

# The result fields `status` shows when a result has them, in this order; the dashboard
# draws these first. Names are quicklook's; any pipeline may use them.
USEFUL_FIELDS = ("fwhm_arcsec", "fwhm_px", "stars", "background", "inst_mag", "snr")
# `status` has room for four: seeing, stars, the target's magnitude and its SNR (a pipeline
# that gives a calibrated `mag` and its `mag_err` has those shown first)
STATUS_FIELDS = ("mag", "mag_err", "fwhm_arcsec", "stars", "inst_mag", "snr")
SHOWN_FIELDS = 4


def useful_fields(result: dict[str, Any] | None) -> str:
    """A few fields of a result, the most useful first: "fwhm_arcsec=3.1 stars=41"."""
    if not result:
        return ""
    keys = [key for key in STATUS_FIELDS if key in result]
    keys += [key for key in result if key not in keys and key not in USEFUL_FIELDS]
    return " ".join(f"{key}={shown(result[key])}" for key in keys[:SHOWN_FIELDS])


def shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
