"""The pipeline on a task queue: a real redis-server, real `seestar-watch worker` processes
and the real daemon, with the faults a night can bring (a worker killed mid-task, the
daemon killed while a task runs, the broker down, a worker that never answers, a bad
result). The answers' checks and the worker's refusals are tested without a server."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seestar_watch.config import load_config
from seestar_watch.executor import task_id
from seestar_watch.sources import Version
from seestar_watch.taskqueue import FrameRunner, answer_of
from tests.conftest import wait_for, write_frame
from tests.harness import DaemonProcess, Scope, started_daemon
from tests.test_alerts_daemon import Receiver
from tests.test_dashboard import free_port

REDIS = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(
    REDIS is None,
    reason="redis-server is not installed (apt-get install redis-server; .ci/run does)",
)


class RedisServer:
    """redis-server on a free loopback port, its data (append-only file) in a folder of the
    test's, so a restart keeps the queue and the results as a real one does."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS is not None
        self.folder.mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self.answers, timeout=20)

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.exceptions.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # a clean shutdown: its append-only file is complete
            self.process.wait(20)
        self.process = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


class WorkerProcess:
    """`seestar-watch worker` in a process of its own, its output in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "seestar_watch", "worker", "-c", str(config)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(20)
        self._log.close()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.close()


def on_queue(tmp_path: Path, broker: RedisServer, **pipeline: Any) -> Scope:
    scope = Scope(
        tmp_path / "scope",
        pipeline={"executor": "celery", "broker": broker.url, "retries": 0, **pipeline},
    )
    return scope


def start_worker(
    scope: Scope, workers: list[WorkerProcess], config: Path | None = None
) -> WorkerProcess:
    worker = WorkerProcess(config or scope.config_path, scope.root / f"worker-{len(workers)}.log")
    workers.append(worker)
    return worker


def settled(scope: Scope) -> list[tuple[Any, ...]]:
    """The ledger's rows once none is pending or running any more (the log says a run
    finished a moment before the ledger records it)."""

    def rows_now() -> list[tuple[Any, ...]] | None:
        found = rows(scope)
        return None if any(row[1] in ("pending", "running") for row in found) else found

    return wait_for(rows_now, timeout=30)  # type: ignore[no-any-return]


def rows(scope: Scope) -> list[tuple[Any, ...]]:
    with sqlite3.connect(scope.ledger) as db:
        return db.execute(
            "SELECT relpath, state, attempts, result, reason FROM frames ORDER BY id"
        ).fetchall()


def on_a_real_broker(test: Any) -> Any:
    return pytest.mark.slow(needs_redis(test))


@on_a_real_broker
def test_frames_run_on_a_worker_exactly_once_with_their_results(
    tmp_path: Path, broker: RedisServer, daemons: list[DaemonProcess], workers: list[WorkerProcess]
) -> None:
    scope = on_queue(tmp_path, broker)
    scope.update(pipeline={"env": {**scope.settings["pipeline"]["env"], "RESULT": '{"stars": 7}'}})
    start_worker(scope, workers)
    daemon = started_daemon(scope, daemons, until="watcher.started")
    for n in range(3):
        write_frame(scope.share / "M 42_sub" / f"{n}.fit")
    daemon.wait_for_event("pipeline.finished", count=3, timeout=60)
    assert [row[1:4] for row in settled(scope)] == [("done", 1, '{"stars": 7}')] * 3
    runs = scope.runs()
    assert len(runs) == 3
    # the frame travelled in the task: the command read a private copy on the worker
    assert all("seestar-watch-frame-" in run["path"] for run in runs)
    assert all(event["carried"] for event in daemon.events("pipeline.submitted"))
    # what the command said on the worker is in the daemon's log, frame by frame
    assert len(daemon.events("pipeline.output")) == 3
    assert daemon.events("pipeline.output")[0]["line"] == "measured ok"


@on_a_real_broker
def test_a_frame_on_shared_storage_is_read_through_the_path_map(
    tmp_path: Path, broker: RedisServer, daemons: list[DaemonProcess], workers: list[WorkerProcess]
) -> None:
    scope = on_queue(tmp_path, broker, carry_mb=0)  # never carried: read from the archive
    mounted = tmp_path / "mounted-archive"  # the worker's view of the daemon's archive
    mounted.symlink_to(scope.archive, target_is_directory=True)
    worker_config = tmp_path / "worker.yaml"
    settings = json.loads(json.dumps(scope.settings))
    settings["pipeline"]["path_map"] = {str(scope.archive): str(mounted)}
    worker_config.write_text(json.dumps(settings))
    start_worker(scope, workers, worker_config)
    daemon = started_daemon(scope, daemons, until="watcher.started")
    write_frame(scope.share / "M 42_sub" / "a.fit")
    daemon.wait_for_event("pipeline.finished", timeout=60)
    [run] = scope.runs()
    assert run["path"].startswith(f"{mounted}/")
    assert [row[1] for row in settled(scope)] == ["done"]
    assert daemon.events("pipeline.submitted")[0]["carried"] is False


@on_a_real_broker
def test_a_worker_killed_mid_task_is_redelivered_and_the_frame_done_once(
    tmp_path: Path, broker: RedisServer, daemons: list[DaemonProcess], workers: list[WorkerProcess]
) -> None:
    scope = on_queue(tmp_path, broker, timeout=2)  # a redelivery waits 2 + 5 + 10 s
    scope.behave("slow:1")
    scope.update(pipeline={"env": {**scope.settings["pipeline"]["env"], "RESULT": '{"stars": 3}'}})
    first = start_worker(scope, workers)
    daemon = started_daemon(scope, daemons, until="watcher.started")
    write_frame(scope.share / "M 42_sub" / "a.fit")
    wait_for(lambda: len(scope.runs()) == 1, timeout=60)  # the command runs on the worker
    first.signal(signal.SIGKILL)  # mid-task: no answer, no acknowledgement
    start_worker(scope, workers)
    daemon.wait_for_event("pipeline.finished", timeout=90)
    assert len(scope.runs()) == 2  # run again, on the second worker
    assert settled(scope) == [(b"M 42_sub/a.fit", "done", 1, '{"stars": 3}', None)]
    assert len(daemon.events("pipeline.submitted")) == 1  # one task, delivered twice
    assert daemon.events("frame.retry_scheduled") == []


@on_a_real_broker
def test_a_restarted_daemon_waits_for_the_task_it_had_submitted(
    tmp_path: Path, broker: RedisServer, daemons: list[DaemonProcess], workers: list[WorkerProcess]
) -> None:
    scope = on_queue(tmp_path, broker)
    scope.behave("slow:3")
    start_worker(scope, workers)
    daemon = started_daemon(scope, daemons, until="watcher.started")
    write_frame(scope.share / "M 42_sub" / "a.fit")
    wait_for(lambda: len(scope.runs()) == 1, timeout=60)
    daemon.kill()  # while the task runs on the worker
    again = started_daemon(scope, daemons, until="watcher.started")
    [reattached] = again.wait_for_event("pipeline.reattached", timeout=30)
    again.wait_for_event("pipeline.finished", timeout=60)
    assert reattached["task"] == daemon.events("pipeline.submitted")[0]["task"]
    assert again.events("pipeline.submitted") == []  # not submitted a second time
    assert len(scope.runs()) == 1  # the command ran once
    assert [row[1:3] for row in settled(scope)] == [("done", 1)]


@on_a_real_broker
def test_with_the_broker_down_frames_wait_and_nothing_is_failed_or_lost(
    tmp_path: Path, broker: RedisServer, daemons: list[DaemonProcess], workers: list[WorkerProcess]
) -> None:
    receiver = Receiver()
    try:
        scope = on_queue(tmp_path, broker)
        scope.update(alerts={"urls": [receiver.url()]})
        os.chmod(scope.config_path, 0o600)
        start_worker(scope, workers)
        daemon = started_daemon(scope, daemons, until="watcher.started")
        broker.stop()
        for n in range(2):
            write_frame(scope.share / "M 42_sub" / f"{n}.fit")
        [lost] = daemon.wait_for_event("broker.lost", timeout=60)
        assert "Connection" in lost["reason"] or "refused" in lost["reason"].lower()
        wait_for(lambda: any("Task queue unreachable" in t for t in receiver.titles()), timeout=30)
        wait_for(lambda: {row[1] for row in rows(scope)} == {"pending"})  # waiting, not failed
        broker.start()  # the same port, the same data
        daemon.wait_for_event("broker.back", timeout=60)
        daemon.wait_for_event("pipeline.finished", count=2, timeout=90)
        assert [row[1:3] for row in settled(scope)] == [("done", 1), ("done", 1)]
        assert len(daemon.events("broker.lost")) == 1  # said once, not per frame
        # back as soon as a task is submitted again, not only once its run has ended
        said = [
            e["event"]
            for e in daemon.logs()
            if e.get("event") in ("broker.back", "pipeline.submitted", "pipeline.finished")
        ]
        assert said.index("broker.back") < said.index(
            "pipeline.submitted"
        )  # none before the outage
        wait_for(lambda: "Task queue back" in receiver.titles(), timeout=30)
        assert daemon.events("frame.failed") == []
    finally:
        receiver.close()


@on_a_real_broker
def test_a_broker_restarted_while_a_task_runs_loses_nothing(
    tmp_path: Path, broker: RedisServer, daemons: list[DaemonProcess], workers: list[WorkerProcess]
) -> None:
    scope = on_queue(tmp_path, broker, timeout=3)
    scope.behave("slow:1.5")
    start_worker(scope, workers)
    daemon = started_daemon(scope, daemons, until="watcher.started")
    write_frame(scope.share / "M 42_sub" / "a.fit")
    wait_for(lambda: len(scope.runs()) == 1, timeout=60)  # running on the worker
    broker.stop()
    daemon.wait_for_event("broker.lost", timeout=60)
    wait_for(lambda: [row[1] for row in rows(scope)] == ["pending"])  # waiting, not failed
    broker.start()
    [finished] = daemon.wait_for_event("pipeline.finished", timeout=90)
    assert finished["outcome"] == "exited" and finished["exit_code"] == 0
    assert daemon.events("pipeline.reattached")  # the same task, waited for again
    assert len(daemon.events("pipeline.submitted")) == 1
    assert [row[1:3] for row in settled(scope)] == [("done", 1)]
    assert daemon.events("frame.failed") == daemon.events("frame.retry_scheduled") == []


@on_a_real_broker
def test_a_worker_that_never_answers_is_a_timeout_and_the_frame_is_tried_again(
    tmp_path: Path, broker: RedisServer, daemons: list[DaemonProcess], workers: list[WorkerProcess]
) -> None:
    scope = on_queue(tmp_path, broker, timeout=1, retries=1, retry_delay=0)
    scope.behave("slow:0.5")
    stuck = start_worker(scope, workers)
    daemon = started_daemon(scope, daemons, until="watcher.started")
    write_frame(scope.share / "M 42_sub" / "a.fit")
    wait_for(lambda: len(scope.runs()) == 1, timeout=60)
    stuck.signal(signal.SIGSTOP)  # alive, holding the task, never answering
    [retry] = daemon.wait_for_event("frame.retry_scheduled", timeout=60)
    assert "did not answer" in retry["reason"]
    start_worker(scope, workers)  # the second attempt is a new task, for any worker
    daemon.wait_for_event("pipeline.finished", count=2, timeout=60)
    submitted = [event["task"] for event in daemon.events("pipeline.submitted")]
    assert len(submitted) == 2 and submitted[0].endswith("-1") and submitted[1].endswith("-2")
    assert [row[1:3] for row in settled(scope)] == [("done", 2)]


@on_a_real_broker
def test_a_result_too_large_or_malformed_is_ignored_with_a_warning(
    tmp_path: Path, broker: RedisServer, daemons: list[DaemonProcess], workers: list[WorkerProcess]
) -> None:
    scope = on_queue(tmp_path, broker)
    scope.update(
        pipeline={"env": {**scope.settings["pipeline"]["env"], "RESULT": '{"stars": [1, 2]}'}}
    )
    start_worker(scope, workers)
    daemon = started_daemon(scope, daemons, until="watcher.started")
    write_frame(scope.share / "M 42_sub" / "a.fit")
    [ignored] = daemon.wait_for_event("pipeline.result_ignored", timeout=60)
    daemon.wait_for_event("pipeline.finished", timeout=30)
    assert "stars" in ignored["reason"]
    assert [row[1:4] for row in settled(scope)] == [("done", 1, None)]  # the run succeeded


# -- without a server: the answers, the worker's refusals, the task's name -----------------


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (None, "no outcome"),
        ({"outcome": "exploded"}, "no outcome"),
        ({"outcome": "exited", "exit_code": "0", "duration": 1.0}, "exit_code"),
        ({"outcome": "exited", "exit_code": 0, "duration": float("nan")}, "duration"),
        ({"outcome": "exited", "exit_code": 0, "duration": 1.0, "lines": "x"}, "lines"),
    ],
)
def test_an_answer_that_is_not_one_is_a_failed_attempt(answer: Any, why: str) -> None:
    ran = answer_of(answer, 1.0)
    assert not ran.run.succeeded
    assert "not one seestar-watch understands" in ran.run.error and why in ran.run.error


def test_an_answer_result_is_checked_as_a_local_one_is() -> None:
    base = {"outcome": "exited", "exit_code": 0, "duration": 2.0}
    assert answer_of({**base, "result": {"stars": 4}}, 2.5).result == {"stars": 4}
    nested = answer_of({**base, "result": {"stars": {"a": 1}}}, 2.5)
    assert nested.run.succeeded and nested.result is None and nested.result_problem
    huge = answer_of({**base, "result": {"x": "y" * 70_000}}, 2.5)
    assert huge.result is None and "larger than 64 KiB" in str(huge.result_problem)
    lines = answer_of({**base, "lines": [["stdout", "ok"], ["evil", "x"], [1, 2], "z"]}, 1.0)
    assert lines.lines == [("stdout", "ok")]


def test_the_worker_refuses_what_its_config_does_not_allow(tmp_path: Path) -> None:
    scope = Scope(tmp_path, pipeline={"path_map": {"/srv/archive": str(tmp_path)}, "carry_mb": 1})
    runner = FrameRunner(load_config(scope.config_path), threading.Event())
    event = {"path": "/etc/passwd", "relpath": "a.fit", "source": "x"}
    job = {"task": "t", "attempt": 1, "event": event, "values": {"path": "/etc/passwd"}}
    outside = runner.answer({**job, "frame": None})
    assert outside["outcome"] == "not_started" and "path_map" in outside["error"]
    escaping = runner.answer({**job, "event": {**event, "path": "/srv/archive/../../etc/passwd"}})
    assert escaping["outcome"] == "not_started"
    too_big = runner.answer({**job, "frame": base64.b64encode(b"x" * 2_000_000).decode()})
    assert too_big["outcome"] == "not_started" and "carry_mb" in too_big["error"]
    assert runner.answer("not a task")["outcome"] == "not_started"
    sourceless = runner.answer({**job, "event": {"path": "/srv/archive/a.fit", "relpath": "a"}})
    assert sourceless["outcome"] == "not_started" and "source" in sourceless["error"]
    assert scope.runs() == []  # nothing of it ran


@needs_redis
def test_a_garbled_answer_in_the_result_store_is_a_failed_attempt(broker: RedisServer) -> None:
    """Anyone who can reach the broker can write where an answer belongs: not even JSON
    there is a failed attempt, said so, never an exception in the daemon's worker."""
    import redis

    from seestar_watch.config import PipelineConfig
    from seestar_watch.executor import Job
    from seestar_watch.log import get_logger
    from seestar_watch.taskqueue import CeleryExecutor

    pipeline = PipelineConfig(command=("true",), executor="celery", broker=broker.url)
    executor = CeleryExecutor(pipeline, lambda: False, logger=get_logger("t"))
    redis.Redis(port=broker.port).set("celery-task-meta-garbled-1", b"\xff not json {")
    event = {"path": "/x.fit", "source": "/x.fit", "relpath": "x.fit", "header": {}}
    ran = executor.run(Job("garbled-1", 1, event, {}, reattach=True), print, print)
    assert not ran.run.succeeded
    assert "not one seestar-watch understands" in ran.run.error


def test_a_task_id_is_the_same_for_the_same_attempt_and_differs_between_ledgers() -> None:
    version = Version("M 42_sub/a.fit", 100, 5)
    first = task_id(Path("/a/ledger.sqlite3"), version, 1)
    assert first == task_id(Path("/a/ledger.sqlite3"), version, 1)
    assert first.endswith("-1") and task_id(Path("/a/ledger.sqlite3"), version, 2).endswith("-2")
    assert first != task_id(Path("/b/ledger.sqlite3"), version, 1)
    assert first != task_id(Path("/a/ledger.sqlite3"), Version("M 42_sub/a.fit", 100, 6), 1)


def test_celery_without_a_broker_is_a_config_error(tmp_path: Path) -> None:
    scope = Scope(tmp_path, pipeline={"executor": "celery"})
    ran = scope.cli("check-config")
    assert ran.returncode == 1 and "pipeline.broker: required with executor: celery" in ran.stderr
    scope.update(pipeline={"broker": "http://example.org"})
    ran = scope.cli("check-config")
    assert ran.returncode == 1 and "pipeline.broker: expected a redis:// address" in ran.stderr


def test_a_worker_says_in_one_line_what_stops_it(tmp_path: Path) -> None:
    scope = Scope(tmp_path)
    ran = scope.cli("worker")
    assert ran.returncode == 1 and ran.stderr.strip().startswith(
        "error: pipeline.broker is not set"
    )
    scope.update(pipeline={"broker": "redis://127.0.0.1:1/0", "command": ["no-such-photometry"]})
    ran = scope.cli("worker")
    assert ran.returncode == 1 and len(ran.stderr.strip().splitlines()) == 1
    assert "pipeline.command: no-such-photometry: not found on PATH" in ran.stderr
