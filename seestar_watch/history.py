"""The ledger read for people: the rows of `status`, `export`, the dashboard, its metrics
and the night's summary, typed, beside the ledger (which stays the store, the work queue
and the instance lock).

Read through the ledger's one read seam (`Ledger.read`), from a read-only connection
while a daemon runs. A row is a `FrameRow`: a misspelt column is then a type error, and a
new column is one field here and one in COLUMNS.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from seestar_watch.ledger import Ledger
from seestar_watch.outcomes import STATES, State

# the header's keywords kept beside a row's result (the whole header stays in the ledger),
# and the field of FrameRow each is read into
HEADER_COLUMNS = (
    ("OBJECT", "object"),
    ("DATE-OBS", "date_obs"),
    ("EXPTIME", "exptime"),
    ("FILTER", "filter"),
)
HEADER_FIELDS = tuple(key for key, _ in HEADER_COLUMNS)
COLUMNS = "id, relpath, state, attempts, exit_code, reason, duration, created_at, updated_at"


@dataclass(frozen=True)
class FrameRow:
    """One frame as the reports read it."""

    id: int
    relpath: str  # below the watched folder; a name that is not UTF-8 keeps its bytes escaped
    state: State
    attempts: int
    exit_code: int | None
    reason: str | None
    duration: float | None  # seconds the last run took
    created_at: float  # first seen (unix time)
    updated_at: float  # last changed (unix time)
    result: dict[str, Any] | None  # what the command measured ($SEESTAR_WATCH_RESULT)
    # header values as the frame gave them: untrusted, any JSON type
    object: Any = None
    date_obs: Any = None
    exptime: Any = None
    filter: Any = None

    def header(self) -> dict[str, Any]:
        """The header's kept keywords by their FITS names: {"OBJECT": ..., "DATE-OBS": ...}."""
        return {key: getattr(self, field) for key, field in HEADER_COLUMNS}


class History:
    """What a ledger says of the night, for people and programs."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def counts(self) -> dict[str, int]:
        rows = self.ledger.read("SELECT state, count(*) FROM frames GROUP BY state")
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        counts.update({str(state): int(n) for state, n in rows})
        return counts

    def recent(self, limit: int) -> list[FrameRow]:
        """The `limit` frames changed last, newest first."""
        return self._rows("ORDER BY updated_at DESC, id DESC LIMIT ?", limit)

    def changed_since(self, since: float, after_id: int, limit: int) -> list[FrameRow]:
        """Frames changed at or after `since` (unix time), oldest change first: the cursor
        (updated_at, id) of the last row, given back, continues exactly where this ended."""
        return self._rows(
            "WHERE (updated_at, id) > (?, ?) ORDER BY updated_at, id LIMIT ?",
            since,
            after_id,
            limit,
        )

    def failures(self, limit: int) -> list[FrameRow]:
        """The latest frames that failed, newest first: `failed`, and those pending again
        after a failure (a retry, or `retry --failed`), which keep their reason."""
        return self._rows(
            "WHERE state = 'failed' OR (state = 'pending' AND reason IS NOT NULL)"
            " ORDER BY updated_at DESC, id DESC LIMIT ?",
            limit,
        )

    def seen_since(self, since: float) -> Iterator[FrameRow]:
        """Every frame first seen at or after `since` (unix time), in arrival order."""
        yield from self._rows("WHERE created_at >= ? ORDER BY id", since)

    def last_change(self) -> float | None:
        """When a frame was last recorded or changed state (unix time), or None."""
        ((value,),) = self.ledger.read("SELECT max(updated_at) FROM frames")
        return None if value is None else float(value)

    def duration_counts(self, bounds: Iterable[float]) -> tuple[list[int], int, float]:
        """For the runs that have a duration: how many took <= each bound, how many in all,
        and the sum of their durations (a Prometheus histogram, without keeping one)."""
        bounds = list(bounds)
        columns = "".join(f"sum(duration <= {float(b)!r}), " for b in bounds)
        ((*under, count, total),) = self.ledger.read(
            f"SELECT {columns}count(duration), total(duration) FROM frames"
            " WHERE duration IS NOT NULL"
        )
        return [int(n or 0) for n in under], int(count), float(total)

    def _rows(self, clause: str, *values: Any) -> list[FrameRow]:
        # json_valid: a header with a NaN (allowed in our JSON, not in SQLite's) shows blanks
        header = ", ".join(
            f"CASE WHEN json_valid(header) THEN json_extract(header, '$.\"{key}\"') END"
            for key in HEADER_FIELDS
        )
        result = "result" if self.ledger.has_results else "NULL"
        query = f"SELECT {COLUMNS}, {result}, {header} FROM frames {clause}"
        return [_frame_row(row) for row in self.ledger.read(query, values)]


def _frame_row(row: tuple[Any, ...]) -> FrameRow:
    (id_, relpath, state, attempts, exit_code, reason, duration, created, updated) = row[:9]
    return FrameRow(
        id_,
        os.fsdecode(bytes(relpath)),
        state,
        attempts,
        exit_code,
        reason,
        duration,
        created,
        updated,
        _result_of(row[9]),
        *row[10:],
    )


def _result_of(text: str | None) -> dict[str, Any] | None:
    try:
        value = None if text is None else json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
