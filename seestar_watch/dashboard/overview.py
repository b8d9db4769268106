"""What the dashboard shows, as JSON: the ledger (read-only) and the daemon's view of the share.

The running daemon hands its live view (share, observer) to its own dashboard, and
also leaves it beside the ledger in `<ledger>.daemon.json` whenever it changes, so
that `seestar-watch dashboard` started on its own can show it too (and whether that
daemon still runs: its pid and start time are in the file).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from seestar_watch.ledger import Ledger
from seestar_watch.report import USEFUL_FIELDS, frame_view, status_from
from seestar_watch.sources import Source

RECENT = 50  # frames in the table
FAILURES = 20  # failed frames listed with their reasons
PAGE = 2000  # frames per /api/frames answer at most (the page asks again for more)

DaemonView = Callable[[], dict[str, Any]]


class Overview:
    def __init__(self, ledger: Ledger, source: Source, daemon_view: DaemonView) -> None:
        self.ledger = ledger
        self.source = source
        self.daemon_view = daemon_view

    def status(self) -> dict[str, Any]:
        """/api/status: `status --json` (50 frames), plus the share, the failures and the
        start of the night the charts cover."""
        report = status_from(self.ledger, self.source, RECENT)
        last_change = self.ledger.last_change()
        report.update(
            daemon=self.daemon_view(),
            pending=report["counts"]["pending"],
            last_frame=report["frames"][0] if report["frames"] else None,
            failures=[frame_view(row, self.source) for row in self.ledger.failures(FAILURES)],
            night_start=night_start(last_change or time.time()),
            useful_fields=list(USEFUL_FIELDS),
            now=time.time(),
        )
        return report

    def frames(self, since: float, after: int, limit: int = PAGE) -> dict[str, Any]:
        """/api/frames: frames changed at or after `since`, oldest change first, and the
        cursor that continues after the last one."""
        rows = self.ledger.changed_since(since, after, min(limit, PAGE))
        cursor = {"since": rows[-1]["updated_at"], "after": rows[-1]["id"]} if rows else None
        return {
            "frames": [frame_view(row, self.source) for row in rows],
            "next": cursor or {"since": since, "after": after},
            "more": len(rows) == min(limit, PAGE),
        }


def night_start(moment: float) -> float:
    """The noon (local time) before `moment`: a night's frames, dusk to dawn, lie after it."""
    local = datetime.fromtimestamp(moment).astimezone()
    noon = local.replace(hour=12, minute=0, second=0, microsecond=0)
    if local < noon:
        noon -= timedelta(days=1)
    return noon.timestamp()


# -- the daemon's view, beside the ledger ------------------------------------------------


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
