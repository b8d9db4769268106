"""Frames named by hand: `seestar-watch process FRAME...` and `seestar-watch retry FRAME...`.

A frame is named as `status` and `export` print it (its path on the share, or its smb://
URL), by its path below watch_path, or by its archived copy. `process` takes the same path
as the daemon (source, intake, ledger, processor) and so needs the ledger to itself; with
`--since`/`--all` it runs frames already done again, from their archived copies, without the
share. `retry` only flips failed rows back to pending, which a running daemon then picks up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, NamedTuple

from seestar_watch.config import SMB_SCHEME, Config
from seestar_watch.errors import UserError
from seestar_watch.fitsheader import Status
from seestar_watch.ledger import Ledger, Recorded
from seestar_watch.lifecycle import Lifecycle, private_files
from seestar_watch.log import escape, get_logger
from seestar_watch.outcomes import Attempt
from seestar_watch.processor import FrameProcessor
from seestar_watch.record import frame_problem, read_and_record
from seestar_watch.share import PROBE_TIMEOUT
from seestar_watch.sources import Source, Version, name_problem, open_source
from seestar_watch.worker import Worker, prepare_ledger

log = get_logger("seestar_watch.manual")

Progress = Callable[[list[int]], Iterable[int]]


class Named(NamedTuple):
    """What became of one frame named on the command line: its state, and why if need be."""

    state: Attempt | Literal["not run"]
    note: str = ""


def relpaths_of(
    config: Config, source: Source, ledger: Ledger, names: Sequence[str]
) -> dict[str, str]:
    """Each frame as given -> its path below watch_path: its source (a path on the share,
    or its smb:// URL), its relpath, or its archived copy; a UserError for any other."""
    archive = str(config.archive.folder)
    found = {}
    for name in names:
        relpath = source.relpath_of(name)
        if relpath is None and not name.lower().startswith(SMB_SCHEME):
            relpath = _archived(ledger, archive, name) or _relpath(name)
        if relpath is None:
            raise UserError(
                f"{escape(name)} is not a frame of image_watcher.watch_path ({source.location}):"
                " name it as `status` prints it, by its path below watch_path, or by its"
                f" archived copy in {archive}"
            )
        found[name] = relpath
    return found


def _archived(ledger: Ledger, archive: str, name: str) -> str | None:
    """The relpath of the frame whose archived copy is `name`, or None."""
    copy = os.path.abspath(name)
    if os.path.commonpath([archive, copy]) != archive or copy == archive:
        return None
    relpath = ledger.archived_at(copy)
    return os.fsdecode(relpath) if relpath is not None else os.path.relpath(copy, archive)


def _relpath(name: str) -> str | None:
    """`name` as a path below watch_path, when it can be one."""
    if os.path.isabs(name):
        return None
    steps = [step for step in name.replace("\\", "/").split("/") if step]
    if not steps or any(name_problem(step) for step in steps):
        return None
    return "/".join(steps)


def process_frames(
    config: Config,
    names: Sequence[str],
    *,
    force: bool,
    since: float | None = None,
    progress: Progress = list,
) -> dict[str, Named]:
    """Run the pipeline now on the frames named, or on every frame done since `since` (from
    their archived copies); each frame's final state (or why it did not run)."""
    source = open_source(config.image_watcher)
    lifecycle = Lifecycle(config.pipeline.shutdown_grace)
    outcomes: dict[str, Named] = {}
    with (
        lifecycle.handling_signals(),
        private_files() as user_umask,
        Ledger.exclusive(config.state.ledger) as ledger,
    ):
        prepare_ledger(ledger)
        if since is None:
            queued = _queue_named(config, source, ledger, names, outcomes, force=force)
        else:
            queued = _queue_done(source, ledger, since)
        processor = FrameProcessor(
            config.pipeline,
            config.archive,
            ledger,
            source,
            config_file=config.source,
            should_abort=lifecycle.should_abort,
            share_ok=lambda: source.check(PROBE_TIMEOUT).is_available,
            command_umask=user_umask,
        )
        processor.clean_archive()
        worker = Worker(processor, lifecycle.stopping)
        oldest_first = sorted(queued, key=lambda frame_id: queued[frame_id])
        for frame_id in progress(oldest_first):
            state = _run_until_settled(ledger, worker, frame_id, lifecycle)
            note = (processor.low_space or "") if state == "waiting" else ""
            outcomes[queued[frame_id][1]] = Named(state, note)
    return outcomes


Queued = dict[int, tuple[int, str]]  # frame id -> its time (the oldest runs first), its name


def _queue_named(
    config: Config,
    source: Source,
    ledger: Ledger,
    names: Sequence[str],
    outcomes: dict[str, Named],
    *,
    force: bool,
) -> Queued:
    queued: Queued = {}
    for shown, relpath in relpaths_of(config, source, ledger, names).items():
        frame_id, outcome, mtime_ns = _queue(
            source, ledger, relpath, force=force, max_frame_mb=config.image_watcher.max_frame_mb
        )
        if frame_id is None:
            outcomes[shown] = outcome
        else:
            queued[frame_id] = (mtime_ns, shown)
    return queued


def _queue_done(source: Source, ledger: Ledger, since: float) -> Queued:
    """Every frame done since `since`, pending again: a new pipeline over the night, run
    from the archived copies (copied again from the share where a copy is gone)."""
    queued: Queued = {}
    for frame in ledger.done_since(since):
        ledger.force_pending(frame.version, frame.header)
        queued[frame.id] = (frame.version.mtime_ns, source.path_of(frame.version.relpath))
    return queued


def _queue(
    source: Source, ledger: Ledger, relpath: str, *, force: bool, max_frame_mb: float
) -> tuple[int | None, Named, int]:
    """The frame's ledger id, made pending (skipped, failed and new frames run too), or why
    not; and its modification time (frames run oldest first). Read from the share; when the
    share cannot say, the version the ledger knows, if its archived copy is there."""
    taken, header = read_and_record(ledger, source, relpath, max_frame_mb=max_frame_mb)
    if header.status in (Status.GONE, Status.UNAVAILABLE):
        known = ledger.recorded(relpath)
        if known is not None and _has_copy(known):
            return _queue_known(ledger, known, force=force)
    if header.version is None or header.status not in (Status.COMPLETE, Status.INVALID):
        return None, Named("not run", taken), 0
    entry = Version(relpath, *header.version)
    problem = frame_problem(entry, header, max_frame_mb)
    if problem is not None:  # --force too: a rejected frame never runs
        return None, Named("rejected", problem), entry.mtime_ns
    found = ledger.find(entry)
    if found is not None and found[1] == "done" and not force:
        return None, Named("done", "already done: --force runs it again"), entry.mtime_ns
    if force or found is None or found[1] != "pending":
        ledger.force_pending(entry, header.cards)
        found = ledger.find(entry)
    return (None if found is None else found[0]), Named("pending"), entry.mtime_ns


def _queue_known(ledger: Ledger, known: Recorded, *, force: bool) -> tuple[int | None, Named, int]:
    """A frame the share cannot show now, run from its archived copy."""
    mtime_ns = known.version.mtime_ns
    if known.state == "rejected":
        return None, Named("rejected", "rejected when it was recorded"), mtime_ns
    if known.state == "done" and not force:
        return None, Named("done", "already done: --force runs it again"), mtime_ns
    if known.state != "pending":
        ledger.force_pending(known.version, known.header)
    return known.id, Named("pending"), mtime_ns


def _has_copy(known: Recorded) -> bool:
    try:
        return known.archived is not None and os.path.getsize(known.archived) == known.version.size
    except OSError:
        return False


def _run_until_settled(
    ledger: Ledger, worker: Worker, frame_id: int, lifecycle: Lifecycle
) -> Attempt:
    """Run one frame, through its retries (each after its delay), until it is done, failed
    or rejected; "pending" when a stop comes first."""
    longest = worker.processor.pipeline.longest_retry_delay
    state: Attempt = "pending"
    # claimed whether due or not: a frame no longer pending is one that settled
    for _, state in worker.drain(lambda: ledger.claim(frame_id), lambda: False):
        if state != "pending" or lifecycle.wait(ledger.seconds_until_due(frame_id, longest) or 0.0):
            break
    return state


def retry_frames(config: Config, names: Sequence[str] | None) -> tuple[int, dict[str, str]]:
    """Failed frames (all, or those named) back to pending: how many, and for each named
    frame that was not failed, what it is and what would run it."""
    with Ledger.shared(config.state.ledger) as ledger:
        if names is None:
            return ledger.retry_failed(None), {}
        named = relpaths_of(config, open_source(config.image_watcher), ledger, names)
        others = {}
        for shown, relpath in named.items():
            state = ledger.latest_state(relpath)
            if state is None:
                others[shown] = "never seen; `seestar-watch process FRAME` runs it"
            elif state in ("pending", "running"):
                others[shown] = f"{state}, not failed: it runs without a retry"
            elif state != "failed":
                others[shown] = (
                    f"{state}, not failed; `seestar-watch process --force FRAME` runs it again"
                )
        return ledger.retry_failed(named.values()), others
