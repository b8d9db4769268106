"""The pipeline on a task queue: Celery, with a Redis broker that also keeps the results.

The daemon stays the one owner of "exactly once": it claims the frame in its ledger,
submits one task whose id comes from the frame's version and the attempt (the same after
a restart, so a restarted daemon waits for the task it had submitted instead of
submitting another), and records the answer once. A worker (`seestar-watch worker`) runs
the command of its own config on the frame with the same safety as a local run
(executor.LocalExecutor): the task carries the frame's facts and, up to
pipeline.carry_mb, the frame itself, never a command.

Redelivery: a task is acknowledged only once it has run (acks_late), so a worker killed
mid-task leaves it to the broker, which hands it to a worker again after the visibility
timeout (the longest a run may take, and a margin). The command may then run twice; the
ledger records the frame, and its result, once.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from celery import Celery

from seestar_watch.config import Config, PipelineConfig
from seestar_watch.executor import Job, LocalExecutor, Postponed, Ran
from seestar_watch.log import get_logger
from seestar_watch.pipeline import OUTPUT_LIMIT, TERM_GRACE, OnLine, RunResult
from seestar_watch.results import RESULT_LIMIT, ResultProblem, parse_result

log = get_logger("seestar_watch.taskqueue")

TASK = "seestar_watch.run_frame"
POLL = 0.005  # seconds between looks at a task's state: the latency the queue adds
# seconds on top of a run's longest time before the daemon gives up on it (a redelivery
# waits for the next sweep for abandoned tasks, every 2 s, and a busy machine)
MARGIN = 5.0
OUTCOMES = ("exited", "timeout", "aborted", "not_started")


def visibility_timeout(pipeline: PipelineConfig) -> float:
    """How long the broker waits before it hands an unacknowledged task out again: longer
    than any run may take (the timeout, the kill's grace), or a slow run would run twice."""
    return pipeline.timeout + TERM_GRACE + 5.0


def longest_answer(pipeline: PipelineConfig) -> float:
    """How long the daemon waits for the answer once a worker started the task: a run, and
    a redelivery after the visibility timeout if that worker died, and a margin."""
    return visibility_timeout(pipeline) + pipeline.timeout + TERM_GRACE + MARGIN


def longest_queue(pipeline: PipelineConfig) -> float:
    """How long a task may wait for a worker: behind the daemon's other frames in flight
    (pipeline.workers of them), each a run at most, and a margin."""
    return pipeline.workers * (pipeline.timeout + TERM_GRACE) + MARGIN


def celery_app(pipeline: PipelineConfig) -> Celery:
    assert pipeline.broker is not None  # the config requires it with executor: celery
    app = Celery("seestar_watch", broker=pipeline.broker, backend=pipeline.broker)
    app.conf.update(
        task_serializer="json",  # never pickle: a task from the network is only data
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,  # acknowledged once run: a killed worker's task is redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a worker takes one frame at a time per slot
        broker_transport_options={
            "visibility_timeout": visibility_timeout(pipeline),
            # look for tasks a dead worker left every 2 s, not every 100 (kombu's default)
            "unacked_restore_interval": 2,
            "unacked_restore_throttle": 1,
        },
        result_expires=7 * 86400,  # a daemon stopped for days still finds its answers
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        redis_socket_connect_timeout=3,
        redis_socket_timeout=10,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


# -- the daemon's side ---------------------------------------------------------------------


class CeleryExecutor:
    """Submits each attempt as one task and waits for its answer within the run's time."""

    def __init__(self, pipeline: PipelineConfig, should_abort: Callable[[], bool], *, logger: Any):
        self.pipeline = pipeline
        self.app = celery_app(pipeline)
        self.should_abort = should_abort
        self.log = logger

    def run(self, job: Job, on_line: OnLine, on_started: Callable[[int | str], None]) -> Ran:
        bound = self.log.bind(frame=job.event["relpath"])
        started = time.monotonic()
        if job.reattach:
            bound.info("pipeline.reattached", task=job.task_id, attempt=job.attempt)
        else:
            payload = self._payload(job)
            try:
                self._answers()  # before a send: it must not wait on the answer itself
                self.app.send_task(TASK, args=[payload], task_id=job.task_id, retry=False)
            except Exception as exc:  # the broker is away: the frame waits, nothing counts
                raise Postponed(_why(exc)) from None
            on_started(job.task_id)
            bound.info(
                "pipeline.submitted",
                task=job.task_id,
                attempt=job.attempt,
                carried=payload["frame"] is not None,
            )
        return self._wait(job, started)

    def _payload(self, job: Job) -> dict[str, Any]:
        """The frame's facts, and the frame itself when it is small enough to carry."""
        path = job.event["path"]
        carried = None
        size = os.path.getsize(path) if os.path.isfile(path) else math.inf
        if size <= self.pipeline.carry_mb * 1e6:
            carried = base64.b64encode(Path(path).read_bytes()).decode()
        return {
            "task": job.task_id,
            "attempt": job.attempt,
            "event": job.event,
            "values": job.values,
            "frame": carried,
        }

    def _wait(self, job: Job, started: float) -> Ran:
        """Until the task's answer, a stop, or no answer in time (a timeout, tried again as
        a local run's). The run's time starts when a worker starts it, again when it is
        redelivered; before that it may wait in the queue as long as one run may take."""
        queued_until = started + longest_queue(self.pipeline)
        run_until, run = math.inf, None
        while True:
            now = time.monotonic()
            if self.should_abort():  # it goes on without us: waited for at the next start
                return Ran(RunResult("aborted", None, now - started))
            meta = self._meta(job.task_id)
            state = meta.get("status")
            if state == "SUCCESS":
                return answer_of(meta.get("result"), time.monotonic() - started)
            if state == "FAILURE":
                return _failed(f"the worker failed: {meta.get('result')!r}"[:300], now - started)
            if state == "STARTED" and isinstance(meta.get("result"), dict):
                delivery = meta["result"].get("run")
                if delivery != run:  # started, or started again after a redelivery
                    run, run_until = delivery, now + longest_answer(self.pipeline)
            if run is None and now > queued_until:
                self._give_up(job.task_id)
                return _failed(
                    f"no worker started it within {longest_queue(self.pipeline):g} s (is"
                    " `seestar-watch worker` running on this broker?)",
                    now - started,
                    "timeout",
                )
            if now > run_until:
                self._give_up(job.task_id)
                return _failed(
                    "timeout: its worker did not answer within"
                    f" {longest_answer(self.pipeline):g} s",
                    now - started,
                    "timeout",
                )
            time.sleep(POLL)

    def _answers(self) -> Any:
        """The result store (one per thread, Celery's way), told not to subscribe to each
        task's answer as it is sent: the answer is read by `_meta`, and a subscription that
        lost its server gives up for good ("the Celery application must be restarted")."""
        backend = self.app.backend
        backend.on_task_call = lambda producer, task_id: None
        return backend

    def _meta(self, task: str) -> dict[str, Any]:
        """The task's state as the result store holds it, read with the backend's own Redis
        client (which reconnects by itself once the broker is back: the backend's retrying
        reader gives up for good after an outage)."""
        backend = self._answers()
        try:
            raw = backend.client.get(backend.get_key_for_task(task))
        except Exception as exc:  # the broker went away while the task runs
            raise Postponed(_why(exc)) from None
        if raw is None:
            return {"status": "PENDING"}
        try:
            meta = backend.decode_result(raw)
        except Exception:  # not even JSON: whoever wrote it, it is no answer of a worker
            meta = None
        if not isinstance(meta, dict):  # an answer that answer_of refuses, in its words
            return {"status": "SUCCESS", "result": None}
        return meta

    def _give_up(self, task: str) -> None:
        """Workers that are up skip the task if it is handed out again (best effort)."""
        with contextlib.suppress(Exception):
            self.app.control.revoke(task)


def _failed(error: str, duration: float, outcome: str = "exited") -> Ran:
    return Ran(RunResult(outcome, None, duration, error=error))


def _why(exc: Exception) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def answer_of(value: Any, waited: float) -> Ran:
    """A worker's answer made into a Ran, checked as untrusted (anyone who can reach the
    broker can write one): an answer that is not one is a failed attempt; a result that is
    not one is ignored with a warning, as a local run's is."""
    try:
        run = _run_of(value)
    except (TypeError, ValueError, KeyError) as exc:
        return _failed(f"the worker's answer is not one seestar-watch understands ({exc})", waited)
    lines = [
        (item[0], item[1])
        for item in value.get("lines", [])[: OUTPUT_LIMIT // 8]
        if isinstance(item, list | tuple)
        and len(item) == 2
        and item[0] in ("stdout", "stderr")
        and isinstance(item[1], str)
    ]
    result, problem = None, value.get("result_problem")
    if problem is not None:
        problem = str(problem)[:300]
    elif value.get("result") is not None:
        encoded = json.dumps(value["result"], allow_nan=True).encode()
        try:
            if len(encoded) > RESULT_LIMIT:
                raise ResultProblem(f"it is larger than {RESULT_LIMIT // 1024} KiB")
            result = parse_result(encoded)
        except ResultProblem as exc:
            problem = str(exc)
    return Ran(run, result, problem, lines)


def _run_of(value: Any) -> RunResult:
    if not isinstance(value, dict) or value.get("outcome") not in OUTCOMES:
        raise ValueError("no outcome")
    exit_code, duration = value.get("exit_code"), value.get("duration")
    if exit_code is not None and (not isinstance(exit_code, int) or isinstance(exit_code, bool)):
        raise ValueError("exit_code is not a number")
    if not isinstance(duration, int | float) or not math.isfinite(duration) or duration < 0:
        raise ValueError("duration is not a number")
    if not isinstance(value.get("lines", []), list):
        raise ValueError("lines is not a list")
    return RunResult(
        value["outcome"],
        exit_code,
        float(duration),
        error=str(value.get("error") or "")[:300],
        dropped_bytes=int(value.get("dropped_bytes") or 0),
    )


# -- the worker's side ---------------------------------------------------------------------


class FrameRunner:
    """What a worker does with one task: the frame where this machine can read it (the
    carried bytes in a private folder, or the shared path mapped), the command of its own
    config on it, and the answer."""

    def __init__(self, config: Config, stopping: threading.Event) -> None:
        self.config = config
        self.pipeline = config.pipeline
        self.stopping = stopping
        self.executor = LocalExecutor(self.pipeline, config.source, stopping.is_set, logger=log)

    def answer(self, payload: Any) -> dict[str, Any]:
        lines: list[tuple[str, str]] = []

        def on_line(stream: str, line: str) -> None:
            lines.append((stream, line))
            log.info("pipeline.output", stream=stream, line=line)

        try:
            job = self._job(payload)
            with self._frame_file(payload, job) as path:
                job = Job(
                    job.task_id,
                    job.attempt,
                    {**job.event, "path": path},
                    {**job.values, "path": path},
                )
                ran = self.executor.run(job, on_line, lambda started: None)
        except Refused as exc:
            log.warning("worker.refused", reason=str(exc))
            return {"outcome": "not_started", "exit_code": None, "duration": 0.0, "error": str(exc)}
        run = ran.run
        return {
            "outcome": run.outcome,
            "exit_code": run.exit_code,
            "duration": run.duration,
            "error": run.error,
            "dropped_bytes": run.dropped_bytes,
            "lines": lines,
            "result": ran.result,
            "result_problem": ran.result_problem,
            "worker": socket.gethostname(),
        }

    def _job(self, payload: Any) -> Job:
        """The task's facts, checked: it comes from the network."""
        if not isinstance(payload, dict):
            raise Refused("refused: the task is not a mapping")
        event, values = payload.get("event"), payload.get("values")
        if not isinstance(event, dict) or not isinstance(event.get("path"), str):
            raise Refused("refused: the task has no frame path")
        if not isinstance(event.get("relpath"), str) or not isinstance(event.get("source"), str):
            raise Refused("refused: the task has no relpath or source")
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            raise Refused("refused: the task's placeholders are not text")
        attempt = payload.get("attempt")
        return Job(
            str(payload.get("task")), attempt if isinstance(attempt, int) else 0, event, values
        )

    @contextlib.contextmanager
    def _frame_file(self, payload: dict[str, Any], job: Job) -> Iterator[str]:
        carried = payload.get("frame")
        if carried is None:
            yield self._shared_path(job.event["path"])
            return
        if not isinstance(carried, str) or len(carried) > self.pipeline.carry_mb * 1e6 * 4 / 3 + 4:
            raise Refused(
                f"refused: a carried frame larger than this worker's pipeline.carry_mb"
                f" ({self.pipeline.carry_mb:g} MB)"
            )
        try:
            data = base64.b64decode(carried, validate=True)
        except (binascii.Error, ValueError):
            raise Refused("refused: the carried frame is not base64") from None
        folder = tempfile.mkdtemp(prefix="seestar-watch-frame-")
        name = os.path.basename(job.event["relpath"])
        if name in ("", ".", "..") or len(os.fsencode(name)) > 200:
            name = "frame.fit"
        path = os.path.join(folder, name)
        try:
            with open(path, "xb") as copy:
                copy.write(data)
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _shared_path(self, path: str) -> str:
        """The daemon's path on this machine, through pipeline.path_map; with a map, a path
        outside its folders is refused (a task names only frames of the shared archive)."""
        mapping = self.pipeline.path_map
        if not mapping:
            return path
        for theirs, ours in sorted(mapping.items(), key=lambda item: -len(item[0])):
            if path == theirs or path.startswith(theirs.rstrip("/") + "/"):
                inside = os.path.normpath(path[len(theirs) :].lstrip("/"))
                if inside.startswith(".."):
                    break
                return os.path.join(ours, inside)
        raise Refused(
            f"refused: {path} is in none of the folders of this worker's pipeline.path_map"
        )


class Refused(Exception):
    pass


def run_worker(config: Config, concurrency: int, say: Callable[[str], None]) -> None:
    """`seestar-watch worker`: take frames from the broker until SIGTERM or Ctrl-C (a warm
    shutdown: the running commands finish first)."""
    app = celery_app(config.pipeline)
    stopping = threading.Event()
    runner = FrameRunner(config, stopping)

    @app.task(name=TASK, bind=True)  # type: ignore[untyped-decorator]
    def run_frame(task: Any, payload: Any) -> dict[str, Any]:
        # a run of its own, named: the daemon times each (re)delivery from its start
        task.update_state(state="STARTED", meta={"run": uuid.uuid4().hex, "pid": os.getpid()})
        return runner.answer(payload)

    name = f"seestar-watch-{os.getpid()}@{socket.gethostname()}"
    say(f"worker {name}: {concurrency} at a time from {_safe(config.pipeline.broker)}")
    argv = [
        "worker",
        "--pool=threads",  # each frame's work is a process of its own already
        f"--concurrency={concurrency}",
        "--loglevel=WARNING",
        "--without-gossip",
        "--without-mingle",
        f"--hostname={name}",
    ]
    try:
        app.worker_main(argv)
    finally:
        stopping.set()


def _safe(url: str | None) -> str:
    """The broker's address without its password."""
    if url is None or "@" not in url:
        return str(url)
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
