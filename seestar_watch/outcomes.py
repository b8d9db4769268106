"""A frame's fate in one vocabulary, on the ground floor: the states of its ledger row,
what one attempt at it came to, and how it ended (as the alert rules are told).

A misspelt state is then a type error, wherever it is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

# a ledger row's state
State = Literal["pending", "running", "done", "failed", "rejected", "skipped"]
STATES: tuple[State, ...] = get_args(State)

# what one attempt came to: a state the row is left in for good (done, failed, rejected),
# `pending` (tried again after retry_delay), `postponed` (the share went away: pending again,
# not counted as a try) or `waiting` (no room in the archive: pending until there is)
Attempt = Literal["done", "failed", "rejected", "pending", "postponed", "waiting"]

TAIL_LINES = 10  # lines of a failed command's output kept for its alert


@dataclass(frozen=True)
class Outcome:
    """How a frame ended, for the alert rules: its name, how (a final state, or `low_space`
    when it waits for room), and what the command said."""

    name: str
    state: str
    exit_code: int | None = None
    reason: str | None = None
    output_tail: tuple[str, ...] = ()
    result: dict[str, Any] | None = None
