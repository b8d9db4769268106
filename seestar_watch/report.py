"""The night as people read it: `status`, `export` and the dashboard's JSON, from the ledger.

One shape of a frame for all of them (`frame_view`): where it is, its state and
tries, the header's OBJECT, DATE-OBS, EXPTIME and FILTER, and the pipeline's
result. Read while the daemon runs (the ledger opened read-only).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psutil

from seestar_watch.config import Config
from seestar_watch.history import HEADER_FIELDS, FrameRow, History
from seestar_watch.ledger import Ledger, low_space
from seestar_watch.outcomes import STATES
from seestar_watch.results import useful_fields
from seestar_watch.sources import Source, open_source


def frame_view(row: FrameRow, source: Source) -> dict[str, Any]:
    """One frame for people and programs: JSON-ready, values as they are (escape to show)."""
    return {
        "id": row.id,
        "source": source.path_of(row.relpath),
        "relpath": row.relpath,
        "state": row.state,
        "attempts": row.attempts,
        "exit_code": row.exit_code,
        "reason": row.reason,
        "duration": row.duration,
        "seen_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        **{key: _scalar(value) for key, value in row.header().items()},
        "observed_at": observed_at(row.date_obs, row.created_at),
        "result": row.result,
    }


def _scalar(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def observed_at(date_obs: Any, seen: float) -> str:
    """When the frame was taken, in UTC: DATE-OBS (UTC by the FITS standard, without a
    zone in Seestar headers), or when it was first seen if the header has none."""
    when = None
    if isinstance(date_obs, str):
        try:
            when = datetime.fromisoformat(date_obs.strip())
            when = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
        except (ValueError, OverflowError):  # a guest's header: 9999-12-31T23:59-14:00
            when = None
    if when is None:
        when = datetime.fromtimestamp(seen, UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def status_from(ledger: Ledger, source: Source, limit: int) -> dict[str, Any]:
    """The `status --json` object, from an open ledger."""
    copies, held = ledger.archive_size()
    history = History(ledger)
    return {
        "counts": history.counts(),
        "frames": [frame_view(row, source) for row in history.recent(limit)],
        "ledger": str(ledger.path),
        "archive": {"copies": copies, "bytes": held},
    }


def status_report(config: Config, limit: int) -> dict[str, Any]:
    """{"counts": {state: n}, "frames": [frame_view, newest first], "ledger": path}."""
    path = config.state.ledger
    if not path.exists():
        return {"counts": dict.fromkeys(STATES, 0), "frames": [], "ledger": str(path)}
    with Ledger.reading(path) as ledger:
        report = status_from(ledger, open_source(config.image_watcher), limit)
    report["daemon"] = recorded_daemon_view(path)
    if warning := low_space(path):
        report["warning"] = warning
    return report


def archive_line(archive: dict[str, int]) -> str:
    """ "archive: 1.3 GB in 312 copies" """
    from seestar_watch.log import count_of

    copies = count_of(archive["copies"], "copy", "copies")
    return f"archive: {archive['bytes'] / 1e9:.2f} GB in {copies}"


def daemon_line(view: dict[str, Any]) -> str:
    """What the daemon sees, in one line: "daemon: running; share down: <why>"."""
    from seestar_watch.log import escape

    if not view.get("running"):
        return "daemon: not running"
    share = str(view.get("share") or "unknown")
    why = f": {escape(str(view['reason']))}" if view.get("reason") else ""
    observer = f"; observer {view['observer']}" if view.get("observer") else ""
    return f"daemon: running; share {share}{why}{observer}"


def status_table(report: dict[str, Any]) -> str:
    from seestar_watch.log import escape

    counts = report["counts"]
    lines = ["  ".join(f"{state} {counts[state]}" for state in STATES)]
    if "daemon" in report:
        lines.append(daemon_line(report["daemon"]))
    if "archive" in report:
        lines.append(archive_line(report["archive"]))
    lines.append("")
    if "warning" in report:
        lines[1:1] = [f"warning: {report['warning']}"]
    if not any(counts.values()):
        lines.append(f"no frames recorded yet (ledger: {report['ledger']})")
    for frame in report["frames"]:
        code = "-" if frame["exit_code"] is None else str(frame["exit_code"])
        measured = useful_fields(frame["result"])
        lines.append(
            f"{taken(frame['observed_at'])}  {frame['state']:<8}  tries {frame['attempts']}"
            f"  exit {code:>3}  {escape(frame['relpath'])}"
            + (f"  ({escape(frame['reason'])})" if frame["reason"] else "")
            + (f"  {escape(measured)}" if measured else "")
        )
    return "\n".join(lines)


def taken(observed_at: str) -> str:
    """When a frame was taken, in local time to the minute with its offset from UTC."""
    return datetime.fromisoformat(observed_at).astimezone().isoformat(timespec="minutes")


# -- export -----------------------------------------------------------------------------

EXPORT_FIELDS = ("source", *HEADER_FIELDS, "state", "attempts", "exit_code", "reason")
_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """`--since`: a time ago ("12h", "30m", "2d") or a local date or time ("2026-11-23",
    "2026-11-23T18:00"); the unix time it means. ValueError says what is accepted."""
    now = time.time() if now is None else now
    if match := _AGO.fullmatch(text.strip().lower()):
        return now - float(match[1]) * _UNITS[match[2]]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a time ago (12h, 30m, 2d) or a date or time"
            " (2026-11-23, 2026-11-23T18:00)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # the user's local time
    return when.timestamp()


def export_rows(config: Config, since: float) -> Iterator[dict[str, Any]]:
    """Every frame first seen since `since`, in arrival order, as frame_view gives it."""
    path = config.state.ledger
    if not path.exists():
        return
    source = open_source(config.image_watcher)
    with Ledger.reading(path) as ledger:
        for row in History(ledger).seen_since(since):
            yield frame_view(row, source)


def write_json_lines(frames: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """One JSON object per line (a night can be long: never one big array in memory)."""
    count = 0
    for frame in frames:
        out.write(json.dumps(frame, ensure_ascii=True, allow_nan=False) + "\n")
        count += 1
    return count


def write_csv(frames: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """One row per frame: EXPORT_FIELDS, then every result field in the order first met.

    The result fields are known only once every row is read, so the rows are kept."""
    rows = list(frames)
    result_fields: dict[str, None] = {}
    for frame in rows:
        result_fields.update(dict.fromkeys(frame["result"] or {}))
    columns = [*EXPORT_FIELDS, *(key for key in result_fields if key not in EXPORT_FIELDS)]
    writer = csv.writer(out)
    writer.writerow([_cell(column) for column in columns])
    for frame in rows:
        values = {**(frame["result"] or {}), **{key: frame[key] for key in EXPORT_FIELDS}}
        writer.writerow([_cell(values.get(column)) for column in columns])
    return len(rows)


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as it is: text from the share that starts like a
    formula (=, +, -, @) is prefixed with ' so that it is never evaluated."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


# -- the daemon's view, beside the ledger: what status and a dashboard on its own show ----
#
# The running daemon leaves its view of the share (up or waiting and why, the observer) in
# `<ledger>.daemon.json` whenever it changes, with its pid and start time, so that whoever
# reads the ledger can tell what it sees and whether it still runs.


def state_file(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + ".daemon.json")


def write_daemon_view(ledger: Path, view: dict[str, Any]) -> None:
    """Replace the file at once (a reader never sees half of it); never raises: the page
    is worth less than the frames."""
    path = state_file(ledger)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        temporary.write_text(json.dumps(view, ensure_ascii=True))
        os.replace(temporary, path)


def recorded_daemon_view(ledger: Path) -> dict[str, Any]:
    """What the last daemon left, with `running` checked (a file cannot say whether the
    process that wrote it is still alive)."""
    try:
        view = json.loads(state_file(ledger).read_text())
        if not isinstance(view, dict):
            view = {}
    except (OSError, ValueError):
        view = {}
    running = _still_running(view)
    if not running and view:
        view["share"] = "unknown"
        view["reason"] = "the daemon is not running"
    return {**view, "running": running, "served_by": "ledger"}


def _still_running(view: dict[str, Any]) -> bool:
    """Whether the process that wrote `view` runs still (pids are reused: its start time
    must match too). Asking its lock instead could make a daemon starting that very
    moment believe another one held the ledger."""
    try:
        process = psutil.Process(int(view["pid"]))
        return abs(process.create_time() - float(view["pid_started"])) < 1.0
    except (KeyError, TypeError, ValueError, psutil.Error):
        return False
