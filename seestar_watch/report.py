"""`seestar-watch status`: counts per state and the latest frames, read while the daemon runs."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from seestar_watch.config import Config
from seestar_watch.ledger import STATES, Ledger, low_space
from seestar_watch.sources import open_source


def status_report(config: Config, limit: int) -> dict[str, Any]:
    """{"counts": {state: n}, "frames": [{source, state, attempts, exit_code, updated_at}]}."""
    path = config.state.ledger
    if not path.exists():
        return {"counts": dict.fromkeys(STATES, 0), "frames": [], "ledger": str(path)}
    with Ledger.reading(path) as ledger:
        counts, rows = ledger.counts(), ledger.recent(limit)
    source = open_source(config.image_watcher)
    frames = [
        {
            "source": source.path_of(os.fsdecode(row["relpath"])),
            "state": row["state"],
            "attempts": row["attempts"],
            "exit_code": row["exit_code"],
            "updated_at": _iso(row["updated_at"]),
            "reason": row["reason"],
        }
        for row in rows
    ]
    report = {"counts": counts, "frames": frames, "ledger": str(path)}
    if warning := low_space(path):
        report["warning"] = warning
    return report


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def status_table(report: dict[str, Any]) -> str:
    from seestar_watch.log import escape

    counts = report["counts"]
    lines = ["  ".join(f"{state} {counts[state]}" for state in STATES), ""]
    if "warning" in report:
        lines[1:1] = [f"warning: {report['warning']}"]
    if not any(counts.values()):
        lines.append(f"no frames recorded yet (ledger: {report['ledger']})")
    for frame in report["frames"]:
        code = "-" if frame["exit_code"] is None else str(frame["exit_code"])
        lines.append(
            f"{frame['updated_at']}  {frame['state']:<8}  tries {frame['attempts']}  exit {code:>3}"
            f"  {escape(frame['source'])}"
            + (f"  ({escape(frame['reason'])})" if frame["reason"] else "")
        )
    return "\n".join(lines)
