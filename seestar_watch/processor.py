"""One claimed frame, from the ledger through the archive and the pipeline back to the ledger.

A bad frame or a failing command is a result recorded in the ledger, never an
exception that escapes: the daemon's workers and `seestar-watch process` share
this path, crash guard included (a bug never leaves a row `running`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seestar_watch import children
from seestar_watch.archive import (
    ArchiveError,
    LowSpace,
    ShareUnavailable,
    SourceChanged,
    archive_copy,
    remove_leftovers,
    require_room,
)
from seestar_watch.config import ArchiveConfig, PipelineConfig
from seestar_watch.executor import Executor, Job, LocalExecutor, Postponed, Ran, task_id
from seestar_watch.ledger import Frame, Ledger, LedgerError
from seestar_watch.log import get_logger
from seestar_watch.outcomes import TAIL_LINES, Attempt, Outcome
from seestar_watch.pipeline import RunResult
from seestar_watch.sources import Source

log = get_logger("seestar_watch.processor")

# sysexits.h's EX_DATAERR: the command says "this frame cannot be used" (a 3-D stack, not a
# light frame); it is rejected at once instead of tried again
EX_DATAERR = 65
PRUNE_BATCH = 200  # copies one pass of retention removes at most (an old archive: over frames)
LAST_WORDS = 200  # characters of the command's last line kept with a failure


class FrameProcessor:
    """The archive copy, the pipeline and the ledger's record of one frame at a time.
    It reads the `pipeline` and `archive` sections and the config file's path (given to
    the command, whose relative paths start in its folder)."""

    def __init__(
        self,
        pipeline: PipelineConfig,
        archive: ArchiveConfig,
        ledger: Ledger,
        source: Source,
        *,
        config_file: Path,
        should_abort: Callable[[], bool],
        share_ok: Callable[[], bool],
        on_outcome: Callable[[Outcome], None] = lambda outcome: None,
        command_umask: int = -1,
    ) -> None:
        self.pipeline = pipeline
        self.archive = archive
        self.config_file = config_file.absolute()
        self.ledger = ledger
        self.source = source
        self.should_abort = should_abort
        self.share_ok = share_ok  # asked before blaming a frame for what may be the share
        self.on_outcome = on_outcome  # how a frame ended for good (the alerts)
        self.low_space: str | None = None  # why frames wait for room in the archive
        self.broker_lost: str | None = None  # why frames wait for the task queue
        self.executor = executor_for(
            pipeline, self.config_file, should_abort, umask=command_umask, logger=log
        )

    def clean_archive(self) -> None:
        """At start: temporaries of copies cut off by a power cut go (the copies are redone),
        and retention applies (it may have changed since the last run)."""
        if not self.archive.enabled or not self.archive.folder.is_dir():
            return
        self.prune_archive()
        removed = remove_leftovers(self.archive.folder)
        if removed:
            log.info(
                "archive.leftovers_removed",
                count=len(removed),
                example=str(removed[0]),
                note="copies cut off by a power cut or a kill; they are made again",
            )

    def prune_archive(self) -> None:
        """Retention (archive.keep_days, archive.max_gb): the copies only finished frames
        use go, the oldest first; the ledger keeps their rows (a done frame never runs
        again; `process` copies it again from the share). A copy a frame still needs
        (pending, running, failed, waiting for a retry) is never removed."""
        archive = self.archive
        if not archive.enabled or (archive.keep_days is None and archive.max_gb is None):
            return
        gone = []
        if archive.keep_days is not None:
            before = time.time() - archive.keep_days * 86400
            gone += [
                self._remove(copy, size)
                for copy, size in self.ledger.removable_copies(PRUNE_BATCH, before=before)
            ]
        if archive.max_gb is not None:
            excess = self.ledger.archive_size()[1] - archive.max_gb * 1e9
            for copy, size in self.ledger.removable_copies(PRUNE_BATCH) if excess > 0 else []:
                gone.append(self._remove(copy, size))
                excess -= size
                if excess <= 0:
                    break
        if gone:
            copies, held = self.ledger.archive_size()
            log.info(
                "archive.pruned",
                copies=len(gone),
                freed_mb=round(sum(gone) / 1e6, 1),
                kept=copies,
                kept_mb=round(held / 1e6, 1),
            )

    def _remove(self, copy: str, size: int) -> int:
        """Remove one copy (only inside the archive: one made before archive.path moved
        is only forgotten); the bytes it freed."""
        root = str(self.archive.folder)
        inside = os.path.commonpath([root, os.path.abspath(copy)]) == root
        if inside:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(copy)
        self.ledger.forget_copy(copy)
        return size if inside else 0

    def process(self, frame: Frame) -> Attempt:
        """Run one claimed frame; what the attempt came to (see outcomes.Attempt)."""
        try:
            return self._process(frame)
        except LedgerError:
            raise  # the ledger could not be written and the daemon is stopping: not a bug
        except Exception as exc:  # a bug: keep the frame (failed, retryable) and keep going
            log.exception("worker.crashed", frame=frame.version.relpath)
            reason = f"internal error: {exc!r}"
            self.ledger.finish(frame.id, "failed", reason=reason)
            self.on_outcome(Outcome(frame.version.relpath, "failed", reason=reason))
            return "failed"

    def _process(self, frame: Frame) -> Attempt:
        relpath = frame.version.relpath
        source = self.source.path_of(relpath)
        bound = log.bind(frame=relpath)
        try:
            path = self._readable_copy(frame, source, relpath)
        except LowSpace as exc:
            return self._wait_for_room(frame, str(exc))
        except ShareUnavailable as exc:
            return self._postpone(frame, f"share unavailable: {exc}", bound)
        except SourceChanged as exc:
            if not self.share_ok():  # an unmounted share makes every file look gone
                return self._postpone(frame, f"share unavailable: {exc}", bound)
            self.ledger.finish(frame.id, "rejected", reason=str(exc))
            bound.warning("frame.rejected", reason=str(exc))
            self.on_outcome(Outcome(relpath, "rejected", reason=str(exc)))
            return "rejected"
        except ArchiveError as exc:
            return self._failed_attempt(frame, None, None, f"archive: {exc}", bound)
        return self._run_pipeline(frame, path, source, relpath, bound)

    def _readable_copy(self, frame: Frame, source: str, relpath: str) -> str:
        """The file the pipeline reads: the archived copy (made once), or the source."""
        archive = self.archive
        if not archive.enabled:
            return source
        if frame.archived and _same_size(frame.archived, frame.version.size):
            return frame.archived
        require_room(archive.folder, frame.version.size, archive.min_free_mb)
        copy = archive_copy(self.source, relpath, archive.folder, frame.version)
        if self.low_space is not None:
            self.low_space = None
            log.info("archive.space_again", folder=str(archive.folder))
        self.ledger.set_archived(frame.id, str(copy))
        self.prune_archive()  # the archive grew: what retention allows is kept
        log.debug("frame.archived", frame=relpath, copy=str(copy))
        return str(copy)

    def _run_pipeline(
        self, frame: Frame, path: str, source: str, relpath: str, bound: Any
    ) -> Attempt:
        pipeline = self.pipeline
        size_kb = frame.version.size / 1024
        event = {
            "path": path,
            "source": source,
            "relpath": relpath,
            "header": frame.header,
            "size_kb": size_kb,
        }
        name = os.path.basename(relpath)
        values = {
            "path": path,
            "source": source,
            "relpath": relpath,
            "name": name,
            "stem": os.path.splitext(name)[0],
            "size_kb": f"{size_kb:.1f}",
        }
        tail: deque[str] = deque(maxlen=TAIL_LINES)  # the last words, for a failure's alert

        def on_line(stream: str, line: str) -> None:
            tail.append(line)
            bound.info("pipeline.output", stream=stream, line=line)

        def on_started(started: int | str) -> None:  # a process here, or a task on the queue
            if isinstance(started, int):
                self.ledger.set_pid(frame.id, started, children.start_time(started))
            else:  # submitted: the task queue answers again, if it did not
                self._broker_trouble(None)
                self.ledger.set_task(frame.id, started)

        attempt = task_id(self.ledger.path, frame.version, frame.attempts)
        # the task of this very attempt was submitted before a restart: wait for it
        job = Job(attempt, frame.attempts, event, values, reattach=frame.task == attempt)
        try:
            ran = self.executor.run(job, on_line, on_started)
        except Postponed as exc:
            self._broker_trouble(str(exc))
            return self._postpone(frame, f"the task queue is unavailable: {exc}", bound)
        self._broker_trouble(None)
        for stream, line in ran.lines:  # what the command said on a worker, said here too
            on_line(stream, line)
        _say_how_it_ran(ran, bound)
        result, measured = ran.run, ran.result
        if result.outcome == "aborted":
            self.ledger.release(frame.id)
            return "pending"
        if result.succeeded:
            self.ledger.finish(
                frame.id, "done", exit_code=0, duration=result.duration, result=measured
            )
            self.on_outcome(Outcome(relpath, "done", 0, result=measured))
            return "done"
        if path == source and not self.share_ok():  # it read from the share, which went away
            return self._postpone(frame, "share unavailable during the run", bound)
        last = _last_words(tail)
        if result.outcome == "exited" and result.exit_code == EX_DATAERR:
            return self._unusable(frame, result, last, bound)
        reason = result.error or _describe_failure(result, pipeline.timeout)
        return self._failed_attempt(
            frame,
            result.exit_code,
            result.duration,
            f"{reason}: {last}" if last and not result.error else reason,
            bound,
            tail=tuple(tail),
        )

    def _unusable(self, frame: Frame, result: RunResult, last: str, bound: Any) -> Attempt:
        """The command said this frame cannot be used (EX_DATAERR): rejected at once, with
        its last words, and never tried again."""
        reason = f"the command cannot use this frame (exit code {EX_DATAERR})" + (
            f": {last}" if last else ""
        )
        self.ledger.finish(
            frame.id, "rejected", exit_code=EX_DATAERR, duration=result.duration, reason=reason
        )
        bound.warning("frame.rejected", reason=reason)
        self.on_outcome(Outcome(frame.version.relpath, "rejected", EX_DATAERR, reason))
        return "rejected"

    def _wait_for_room(self, frame: Frame, reason: str) -> Attempt:
        """Pending again, nothing held against it: said once (a log line and an alert)
        until a copy can be made again."""
        self.ledger.release(frame.id)
        if self.low_space is None:
            log.warning("archive.low_space", reason=reason)
            self.on_outcome(Outcome(frame.version.relpath, "low_space", reason=reason))
        self.low_space = reason
        return "waiting"

    def _broker_trouble(self, reason: str | None) -> None:
        """The task queue went away (a reason) or answers again (None): each said once, in
        the log and to the alerts, as the share is."""
        if reason is not None and self.broker_lost is None:
            log.warning("broker.lost", reason=reason, effect="frames wait as pending")
            self.on_outcome(Outcome("", "broker_lost", reason=reason))
        elif reason is None and self.broker_lost is not None:
            log.info("broker.back", was=self.broker_lost)
            self.on_outcome(Outcome("", "broker_back", reason=self.broker_lost))
        self.broker_lost = reason

    def _postpone(self, frame: Frame, reason: str, bound: Any) -> Attempt:
        self.ledger.release(frame.id)  # the share's trouble is not the frame's fault
        bound.warning("frame.postponed", reason=reason)
        return "postponed"

    def _failed_attempt(
        self,
        frame: Frame,
        exit_code: int | None,
        duration: float | None,
        reason: str,
        bound: Any,
        *,
        tail: tuple[str, ...] = (),
    ) -> Attempt:
        pipeline = self.pipeline
        if frame.attempts <= pipeline.retries:
            delay = pipeline.retry_wait(frame.attempts)
            self.ledger.retry_later(
                frame.id, delay, exit_code=exit_code, duration=duration, reason=reason
            )
            bound.warning(
                "frame.retry_scheduled", reason=reason, attempt=frame.attempts, retry_in_s=delay
            )
            return "pending"
        self.ledger.finish(
            frame.id, "failed", exit_code=exit_code, duration=duration, reason=reason
        )
        bound.error("frame.failed", reason=reason, attempts=frame.attempts)
        self.on_outcome(Outcome(frame.version.relpath, "failed", exit_code, reason, tail))
        return "failed"


def executor_for(
    pipeline: PipelineConfig,
    config_file: Path,
    should_abort: Callable[[], bool],
    *,
    umask: int = -1,
    logger: Any,
) -> Executor:
    """The executor pipeline.executor names (Celery only imported when it is chosen)."""
    if pipeline.executor == "celery":
        from seestar_watch.taskqueue import CeleryExecutor

        return CeleryExecutor(pipeline, should_abort, logger=logger)
    return LocalExecutor(pipeline, config_file, should_abort, umask=umask, logger=logger)


def _say_how_it_ran(ran: Ran, bound: Any) -> None:
    """The log's account of one run: a result ignored, output cut, and how it ended."""
    if ran.result_problem is not None:
        bound.warning(
            "pipeline.result_ignored",
            reason=ran.result_problem,
            note="$SEESTAR_WATCH_RESULT takes one JSON object of numbers, strings, booleans"
            " and nulls",
        )
    if ran.run.dropped_bytes:
        bound.warning("pipeline.output_truncated", dropped_bytes=ran.run.dropped_bytes)
    bound.info(
        "pipeline.finished",
        outcome=ran.run.outcome,
        exit_code=ran.run.exit_code,
        duration_s=round(ran.run.duration, 3),
        error=ran.run.error or None,
        result=ran.result,
    )


def _last_words(tail: deque[str]) -> str:
    """The command's last line of output that says something, cut to a readable length."""
    said = next((line.strip() for line in reversed(tail) if line.strip()), "")
    return said if len(said) <= LAST_WORDS else said[: LAST_WORDS - 3] + "..."


def _describe_failure(result: RunResult, timeout: float) -> str:
    if result.outcome == "timeout":
        return f"timeout: still running after {timeout:g} s, stopped"
    if result.exit_code is not None and result.exit_code < 0:
        return f"killed by signal {-result.exit_code}"
    return f"exit code {result.exit_code}"


def _same_size(path: str, size: int) -> bool:
    try:
        return Path(path).stat().st_size == size
    except OSError:
        return False
