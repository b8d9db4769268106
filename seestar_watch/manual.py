"""Frames named by hand: `seestar-watch process PATH...` and `seestar-watch retry PATH...`.

`process` takes the same path as the daemon (source, intake, ledger, processor)
and so needs the ledger to itself; `retry` only flips failed rows back to pending,
which a running daemon then picks up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from seestar_watch import children, intake
from seestar_watch.config import Config
from seestar_watch.errors import UserError
from seestar_watch.fitsheader import Status
from seestar_watch.ledger import Ledger
from seestar_watch.lifecycle import Lifecycle, private_files
from seestar_watch.log import get_logger
from seestar_watch.processor import FrameProcessor
from seestar_watch.share import PROBE_TIMEOUT
from seestar_watch.sources import Entry, Source, open_source

log = get_logger("seestar_watch.manual")

Progress = Callable[[list[int]], Iterable[int]]


class Outcome(NamedTuple):
    """What became of one frame named on the command line: its state, and why if need be."""

    state: str  # done | failed | rejected | pending | waiting (no room) | not run
    note: str = ""


def relpaths_inside(source: Source, paths: Sequence[Path]) -> dict[str, str]:
    """Each path (as given) -> its path below the source; a UserError for one outside."""
    relpaths = {}
    for path in paths:
        relpath = source.relpath_of(str(path))
        if relpath is None:
            raise UserError(f"{path} is not inside image_watcher.watch_path ({source.location})")
        relpaths[str(path)] = relpath
    return relpaths


def process_paths(
    config: Config, paths: Sequence[Path], *, force: bool, progress: Progress = list
) -> dict[str, Outcome]:
    """Run the pipeline on `paths` now; returns each path's final state (or why it did not run)."""
    source = open_source(config.image_watcher)
    relpaths = relpaths_inside(source, paths)
    lifecycle = Lifecycle(config.pipeline.shutdown_grace)
    outcomes: dict[str, Outcome] = {}
    with (
        lifecycle.handling_signals(),
        private_files() as user_umask,
        Ledger.exclusive(config.state.ledger) as ledger,
    ):
        # the ledger is ours alone: a row still `running` was left by a daemon that was killed
        children.stop_orphans(ledger)
        if recovered := ledger.recover_running():
            log.warning(
                "ledger.recovered", frames=recovered, note="left running by a killed daemon"
            )
        queued: dict[int, tuple[int, str]] = {}  # frame id -> its time, the path as given
        for shown, relpath in relpaths.items():
            frame_id, outcome, mtime_ns = _queue(
                source, ledger, relpath, force=force, max_frame_mb=config.image_watcher.max_frame_mb
            )
            if frame_id is None:
                outcomes[shown] = outcome
            else:
                queued[frame_id] = (mtime_ns, shown)
        processor = FrameProcessor(
            config,
            ledger,
            source,
            lifecycle.should_abort,
            lambda: source.check(PROBE_TIMEOUT).is_available,
            command_umask=user_umask,
        )
        processor.clean_archive()
        oldest_first = sorted(queued, key=lambda frame_id: queued[frame_id])
        for frame_id in progress(oldest_first):
            state = _run_until_settled(ledger, processor, frame_id, lifecycle)
            note = (processor.low_space or "") if state == "waiting" else ""
            outcomes[queued[frame_id][1]] = Outcome(state, note)
    return outcomes


def _queue(
    source: Source, ledger: Ledger, relpath: str, *, force: bool, max_frame_mb: float
) -> tuple[int | None, Outcome, int]:
    """The frame's ledger id, made pending (skipped, failed and new frames run too), or why
    not; and its modification time (frames run oldest first)."""
    taken, header = intake.read_and_record(ledger, source, relpath, max_frame_mb=max_frame_mb)
    if header.version is None or header.status not in (Status.COMPLETE, Status.INVALID):
        return None, Outcome("not run", taken), 0
    entry = Entry(relpath, *header.version)
    problem = intake.frame_problem(entry, header, max_frame_mb)
    if problem is not None:  # --force too: a rejected frame never runs
        return None, Outcome("rejected", problem), entry.mtime_ns
    version = entry.version
    found = ledger.find(version)
    state = None if found is None else found[1]
    if state == "done" and not force:
        return None, Outcome("done", "already done: --force runs it again"), entry.mtime_ns
    if force or state != "pending":
        ledger.force_pending(version, header.cards)
        found = ledger.find(version)
    return (None if found is None else found[0]), Outcome("pending"), entry.mtime_ns


def _run_until_settled(
    ledger: Ledger, processor: FrameProcessor, frame_id: int, lifecycle: Lifecycle
) -> str:
    """Run one frame, through its retries, until it is done, failed or rejected."""
    state = "pending"
    while state == "pending" and not lifecycle.should_abort():
        frame = ledger.claim(frame_id)
        if frame is None:
            return "pending"
        state = processor.process(frame)
        if state == "pending":
            longest = processor.config.pipeline.longest_retry_delay
            lifecycle.wait(ledger.seconds_until_due(frame_id, longest) or 0.0)
    return state


def retry_paths(config: Config, paths: Sequence[Path] | None) -> tuple[int, dict[str, str]]:
    """Failed frames (all, or those at `paths`) back to pending: how many, and for each
    named path that was not failed, what it is and what would run it."""
    named = None if paths is None else relpaths_inside(open_source(config.image_watcher), paths)
    with Ledger.shared(config.state.ledger) as ledger:
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
