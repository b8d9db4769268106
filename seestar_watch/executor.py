"""Where one attempt at a frame runs: here, as a process of ours (`LocalExecutor`), or on a
worker that a task queue feeds (`taskqueue.CeleryExecutor`, built on this), behind one face;
the processor picks one (`processor.executor_for`).

The processor owns the frame's fate (the ledger, retries, alerts); an executor only runs the
command on it and says how that went, in the same words either way: a `RunResult` and the
result the command left.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from seestar_watch import children
from seestar_watch.config import PipelineConfig
from seestar_watch.pipeline import (
    OnLine,
    RunResult,
    child_environment,
    event_json,
    resolve_program,
    run_command,
)
from seestar_watch.placeholders import expand
from seestar_watch.results import Result, ResultProblem, read_result, result_file
from seestar_watch.sources import Version


@dataclass(frozen=True)
class Job:
    """One attempt at one frame: what the command is told of it, and the attempt's name."""

    task_id: str  # the same for the same version and attempt, in this ledger
    attempt: int
    event: dict[str, Any]  # path, source, relpath, header, size_kb (stdin and the env)
    values: dict[str, str]  # the command's placeholders
    reattach: bool = False  # an earlier run of this daemon submitted it: wait, do not submit


@dataclass(frozen=True)
class Ran:
    """How the attempt went: the command's run, and its result (or why that was ignored)."""

    run: RunResult
    result: Result | None = None
    result_problem: str | None = None
    lines: list[tuple[str, str]] = field(default_factory=list)  # said elsewhere (a worker)


class Postponed(Exception):
    """The attempt could not be made for a reason that is not the frame's (the broker is
    away): the frame waits as pending, and the attempt does not count."""


class Executor(Protocol):
    def run(self, job: Job, on_line: OnLine, on_started: Callable[[int | str], None]) -> Ran: ...


def task_id(ledger: Path, version: Version, attempt: int) -> str:
    """A name for this attempt that any restart computes again: from the ledger it is
    recorded in and the version's (relpath, size, mtime), so two telescopes on one broker
    never meet."""
    relpath, size, mtime_ns = version.key
    named = b"\0".join([str(ledger).encode(), relpath, str(size).encode(), str(mtime_ns).encode()])
    digest = hashlib.sha256(named).hexdigest()[:24]
    return f"seestar-watch-{digest}-{attempt}"


class LocalExecutor:
    """The command as a process of this machine: no shell, its own process group, bounded
    in time and output (pipeline.run_command), its result file read once it succeeded."""

    def __init__(
        self,
        pipeline: PipelineConfig,
        config_file: Path,
        should_abort: Callable[[], bool],
        *,
        umask: int = -1,
        logger: Any,
    ) -> None:
        self.pipeline = pipeline
        self.config_file = config_file.absolute()
        self.should_abort = should_abort
        self.umask = umask  # the user's, not the daemon's private one
        self.log = logger

    def run(self, job: Job, on_line: OnLine, on_started: Callable[[int | str], None]) -> Ran:
        argv = resolve_program(expand(self.pipeline.command, job.values))
        bound = self.log.bind(frame=job.event["relpath"])
        bound.info("pipeline.started", command=shlex.join(argv), attempt=job.attempt)
        with result_file() as result_path:
            env = child_environment(
                self.pipeline.env, job.event, result_path, str(self.config_file)
            )
            run = run_command(
                argv,
                before_exec=children.die_with_parent,
                start_guard=children.starting(),
                register=children.started,  # known before any worker looks for strays
                on_started=on_started,
                stdin_data=event_json(job.event).encode(),
                env=env,
                timeout=self.pipeline.timeout,
                cwd=self.config_file.parent,  # the command's relative paths start there
                should_abort=self.should_abort,
                on_line=on_line,
                umask=self.umask,
            )
            result, problem = None, None
            if run.succeeded:
                try:
                    result = read_result(result_path)
                except ResultProblem as exc:
                    problem = str(exc)
        if run.pid is not None:
            children.finished(run.pid)  # and what it left behind outside its group
        return Ran(run, result, problem)
