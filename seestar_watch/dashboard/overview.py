"""What the dashboard shows, as JSON: the ledger (read-only) and the daemon's view of the share.

The running daemon hands its live view (share, observer) to its own dashboard; the one
it leaves beside the ledger (report.py) is what `seestar-watch dashboard` started on its
own shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from seestar_watch.config import Target
from seestar_watch.history import History
from seestar_watch.ledger import Ledger
from seestar_watch.report import frame_view, status_from
from seestar_watch.results import USEFUL_FIELDS
from seestar_watch.sources import Source

RECENT = 50  # frames in the table
FAILURES = 20  # failed frames listed with their reasons
PAGE = 2000  # frames per /api/frames answer at most (the page asks again for more)

DaemonView = Callable[[], dict[str, Any]]


class Overview:
    def __init__(
        self,
        ledger: Ledger,
        source: Source,
        daemon_view: DaemonView,
        targets: tuple[Target, ...] = (),
        name: str = "seestar",
    ) -> None:
        self.name = name  # the telescope's, on a fleet's page and in /metrics' `scope` label
        self.ledger = ledger
        self.history = History(ledger)
        self.source = source
        self.daemon_view = daemon_view
        # the light curves fold a target with a period at its epoch
        self.periods = [
            {"name": t.name, "period": t.period, "epoch": t.epoch}
            for t in targets
            if t.period is not None
        ]

    def status(self) -> dict[str, Any]:
        """/api/status: `status --json` (50 frames), plus the share, the failures and the
        start of the night the charts cover."""
        report = status_from(self.ledger, self.source, RECENT)
        last_change = self.history.last_change()
        report.update(
            daemon=self.daemon_view(),
            pending=report["counts"]["pending"],
            last_frame=report["frames"][0] if report["frames"] else None,
            failures=[frame_view(row, self.source) for row in self.history.failures(FAILURES)],
            night_start=night_start(last_change or time.time()),
            useful_fields=list(USEFUL_FIELDS),
            periods=self.periods,
            scope=self.name,
            now=time.time(),
        )
        return report

    def frames(self, since: float, after: int, limit: int = PAGE) -> dict[str, Any]:
        """/api/frames: frames changed at or after `since`, oldest change first, and the
        cursor that continues after the last one."""
        rows = self.history.changed_since(since, after, min(limit, PAGE))
        cursor = {"since": rows[-1].updated_at, "after": rows[-1].id} if rows else None
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
