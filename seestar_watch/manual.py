"""Frames named by hand: `seestar-watch process PATH...` and `seestar-watch retry PATH...`.

`process` takes the same path as the daemon (header, ledger, archive, pipeline,
ledger) and so needs the ledger to itself; `retry` only flips failed rows back to
pending, which a running daemon then picks up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import structlog

from seestar_watch.config import Config
from seestar_watch.daemon import Daemon, locked_ledger
from seestar_watch.errors import UserError
from seestar_watch.fitsheader import Status, read_header
from seestar_watch.ledger import Ledger
from seestar_watch.scan import version_of
from seestar_watch.worker import FrameProcessor

log = structlog.get_logger("seestar_watch.manual")

Progress = Callable[[list[int]], Iterable[int]]


class Outcome(NamedTuple):
    """What became of one frame named on the command line: its state, and why if need be."""

    state: str  # done | failed | rejected | pending | not run
    note: str = ""


def relpath_inside(config: Config, path: Path) -> str:
    """`path` relative to watch_path; a UserError when it lies outside."""
    root = os.path.abspath(config.image_watcher.watch_path)
    absolute = os.path.abspath(path)
    if os.path.commonpath([root, absolute]) != root or absolute == root:
        raise UserError(f"{path} is not inside image_watcher.watch_path ({root})")
    return os.path.relpath(absolute, root)


def process_paths(
    config: Config, paths: Sequence[Path], *, force: bool, progress: Progress = list
) -> dict[str, Outcome]:
    """Run the pipeline on `paths` now; returns each path's final state (or why it did not run)."""
    relpaths = {str(path): relpath_inside(config, path) for path in paths}
    daemon = Daemon(config)
    outcomes: dict[str, Outcome] = {}
    with daemon.handling_signals(), locked_ledger(config) as ledger:
        # the ledger is ours alone: a row still `running` was left by a daemon that was killed
        if recovered := ledger.recover_running():
            log.warning(
                "ledger.recovered", frames=recovered, note="left running by a killed daemon"
            )
        queued = {}
        for shown, relpath in relpaths.items():
            frame_id, outcome = _queue(config, ledger, relpath, force=force)
            if frame_id is None:
                outcomes[shown] = outcome
            else:
                queued[frame_id] = shown
        processor = FrameProcessor(config, ledger, daemon.should_abort, daemon.share_answers)
        for frame_id in progress(list(queued)):
            state = _run_until_settled(ledger, processor, frame_id, daemon)
            outcomes[queued[frame_id]] = Outcome(state)
    return outcomes


def _queue(
    config: Config, ledger: Ledger, relpath: str, *, force: bool
) -> tuple[int | None, Outcome]:
    """The frame's ledger id, made pending (skipped, failed and new frames run too), or why not."""
    root = str(config.image_watcher.watch_path.absolute())
    source = os.path.join(root, relpath)
    header = read_header(source)
    if header.identity is None or header.status in (Status.GONE, Status.UNAVAILABLE):
        return None, Outcome("not run", f"not readable: {header.reason}")
    version = version_of(root, source, *header.identity[2:])
    if header.status is Status.INCOMPLETE:
        return None, Outcome("not run", f"still arriving: {header.reason}")
    if header.status is Status.INVALID:
        ledger.add_rejected(version, header.reason)
        return None, Outcome("rejected", header.reason)
    found = ledger.find(version)
    state = None if found is None else found[1]
    if state == "done" and not force:
        return None, Outcome("done", "already done: --force runs it again")
    if force or state not in ("pending", "running"):
        ledger.force_pending(version, header.cards)
        found = ledger.find(version)
    return (None if found is None else found[0]), Outcome("pending")


def _run_until_settled(
    ledger: Ledger, processor: FrameProcessor, frame_id: int, daemon: Daemon
) -> str:
    """Run one frame, through its retries, until it is done, failed or rejected."""
    state = "pending"
    while state == "pending" and not daemon.should_abort():
        frame = ledger.claim(frame_id)
        if frame is None:
            return "pending"
        state = processor.process(frame)
        if state == "pending":
            daemon.wait_stop(ledger.seconds_until_due(frame_id) or 0.0)
    return state


def retry_paths(config: Config, paths: Sequence[Path] | None) -> tuple[int, dict[str, str]]:
    """Failed frames (all, or those at `paths`) back to pending: how many, and for each
    named path that was not failed, what it is and what would run it."""
    named = None if paths is None else {str(p): relpath_inside(config, p) for p in paths}
    ledger = Ledger.open(config.state.ledger)
    try:
        if named is None:
            return ledger.retry_failed(None), {}
        others = {}
        for shown, relpath in named.items():
            state = ledger.latest_state(os.fsencode(relpath))
            if state is None:
                others[shown] = "never seen; `seestar-watch process PATH` runs it"
            elif state in ("pending", "running"):
                others[shown] = f"{state}, not failed: it runs without a retry"
            elif state != "failed":
                others[shown] = (
                    f"{state}, not failed; `seestar-watch process --force PATH` runs it again"
                )
        return ledger.retry_failed([os.fsencode(r) for r in named.values()]), others
    finally:
        ledger.close()
