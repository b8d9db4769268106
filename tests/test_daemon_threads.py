"""The daemon's threads, in this process: counters shared by workers, and the share thread
that nothing touching the share may hold."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from seestar_watch.config import parse_config
from seestar_watch.daemon import Daemon
from seestar_watch.ledger import Frame
from seestar_watch.sources import Version
from seestar_watch.worker import Worker
from tests.conftest import events_named, wait_for, write_frame


class _Failing:
    """A frame processor whose every frame fails at once (the ledger is not touched)."""

    def process(self, frame: Frame) -> str:
        return "failed"


def test_failures_counted_by_many_workers_at_once_are_all_counted() -> None:
    frame = Frame(1, Version("M 42_sub/a.fit", 1, 1), {}, 1, None)
    worker = Worker(_Failing(), threading.Event())  # type: ignore[arg-type]
    workers, each = 4, 200

    def switch_threads_between_opcodes(code: FrameType, event: str, _: Any) -> Any:
        # let another thread run between any two bytecodes of the worker's loop, so a
        # read-modify-write that is not under a lock loses updates, as it can in production
        if code.f_code is Worker.drain.__code__:
            code.f_trace_opcodes = True
            if event == "opcode":
                time.sleep(0)
            return switch_threads_between_opcodes
        return None

    def one_worker() -> None:
        frames = iter([frame] * each)
        for _ in worker.drain(lambda: next(frames, None), lambda: False):
            pass

    threading.settrace(switch_threads_between_opcodes)
    try:
        threads = [threading.Thread(target=one_worker) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        threading.settrace(None)  # type: ignore[arg-type]
    assert worker.failed == workers * each
    assert worker.last_frame == "a.fit failed"


def test_a_worker_waits_when_there_is_nothing_and_stops_when_told() -> None:
    stopping = threading.Event()
    worker = Worker(_Failing(), stopping)  # type: ignore[arg-type]
    frames = [Frame(n, Version(f"f{n}.fit", 1, n), {}, 1, None) for n in range(3)]
    queue = list(frames)
    waits = []

    def wait() -> bool:  # the second time there is nothing to claim, a stop comes
        waits.append(len(queue))
        if len(waits) == 1:
            queue.append(Frame(9, Version("late.fit", 1, 9), {}, 1, None))
        else:
            stopping.set()
        return True

    done = [f.id for f, state in worker.drain(lambda: queue.pop(0) if queue else None, wait)]
    assert done == [0, 1, 2, 9] and waits == [0, 0]
    assert list(worker.drain(lambda: frames[0], lambda: True)) == []  # stopped: nothing runs


def in_process_daemon(tmp_path: Path, **watcher: Any) -> tuple[Daemon, threading.Thread]:
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    raw: dict[str, Any] = {
        "image_watcher": {
            "watch_path": str(share),
            "debounce_delay": 0.2,
            "mount_retry": 0.2,
            "rescan_interval": 0,
            **watcher,
        },
        "pipeline": {"command": ["true", "{path}"], "retry_delay": 0},
        "state": {"path": str(tmp_path / "state" / "ledger.sqlite3")},
        "archive": {"path": str(tmp_path / "archive")},
    }
    daemon = Daemon(parse_config(raw, tmp_path / "config.yaml"))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    return daemon, thread


def last_frame(daemon: Daemon) -> str:
    return daemon.night.worker.last_frame if daemon.night else ""


def stop(daemon: Daemon, thread: threading.Thread) -> None:
    daemon.lifecycle.request_stop()
    thread.join(30)
    assert not thread.is_alive()


def test_a_watch_that_fails_to_start_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]
) -> None:
    from seestar_watch.sources import events

    real = events.start_observer
    calls = []

    def full_the_first_time(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:  # as when the inotify watch limit is reached
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return real(*args, **kwargs)

    monkeypatch.setattr(events, "start_observer", full_the_first_time)
    daemon, thread = in_process_daemon(tmp_path)
    try:
        wait_for(lambda: events_named(logs, "watcher.started"), timeout=10)
        assert len(events_named(logs, "watcher.start_failed")) == 1
        write_frame(tmp_path / "share" / "M 42_sub" / "a.fit")
        wait_for(lambda: last_frame(daemon) == "a.fit done", timeout=10)
    finally:
        stop(daemon, thread)


def test_a_listing_that_hangs_does_not_hold_share_supervision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]
) -> None:
    from seestar_watch import share
    from seestar_watch.sources.local import LocalSource

    monkeypatch.setattr(share, "CHECK_WHILE_UP", 0.1)
    release = threading.Event()
    real_list = LocalSource.list_frames

    def hung(self: LocalSource) -> Any:  # a dead server: the listing never returns
        release.wait(30)
        return real_list(self)

    monkeypatch.setattr(LocalSource, "list_frames", hung)
    daemon, thread = in_process_daemon(tmp_path)
    try:
        wait_for(lambda: daemon.share.turns >= 5, timeout=10)  # still checking the share
        (tmp_path / "share").rename(tmp_path / "gone")
        wait_for(lambda: events_named(logs, "share.lost"), timeout=10)
        (tmp_path / "gone").rename(tmp_path / "share")
        wait_for(lambda: events_named(logs, "share.restored"), timeout=10)
    finally:
        release.set()
        stop(daemon, thread)


def test_a_watch_that_will_not_stop_is_abandoned_and_a_fresh_one_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]
) -> None:
    # a frozen FUSE mount: watchdog's observer.stop() joins its emitters with no timeout
    from seestar_watch import intake, share
    from seestar_watch.sources.local import LocalSource

    monkeypatch.setattr(share, "CHECK_WHILE_UP", 0.1)
    monkeypatch.setattr(intake, "UNWATCH_TIMEOUT", 0.3)
    stuck = threading.Event()
    real_unwatch = LocalSource.unwatch

    def unwatch_hangs(self: LocalSource, timeout: float) -> None:
        self._observer = None  # what unwatch does first; then the join never returns
        stuck.wait(30)

    monkeypatch.setattr(LocalSource, "unwatch", unwatch_hangs)
    daemon, thread = in_process_daemon(tmp_path)
    try:
        wait_for(lambda: events_named(logs, "watcher.started"), timeout=10)
        (tmp_path / "share").rename(tmp_path / "gone")
        wait_for(lambda: events_named(logs, "watcher.abandoned"), timeout=10)
        (tmp_path / "gone").rename(tmp_path / "share")
        wait_for(lambda: len(events_named(logs, "watcher.started")) == 2, timeout=10)
        write_frame(tmp_path / "share" / "M 42_sub" / "after.fit")
        wait_for(lambda: last_frame(daemon) == "after.fit done", timeout=10)
    finally:
        stuck.set()
        monkeypatch.setattr(LocalSource, "unwatch", real_unwatch)
        stop(daemon, thread)


def test_a_listing_stuck_on_the_old_mount_does_not_hold_the_share_that_came_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]
) -> None:
    # a hung FUSE mount, lazily unmounted and mounted afresh: the old listing never returns
    from seestar_watch import intake, share
    from seestar_watch.sources.local import LocalSource

    monkeypatch.setattr(share, "CHECK_WHILE_UP", 0.1)
    monkeypatch.setattr(intake, "LIST_TIMEOUT", 0.5)
    release = threading.Event()
    real_list = LocalSource.list_frames
    calls = []

    def first_listing_hangs(self: LocalSource) -> Any:
        calls.append(1)
        if len(calls) == 2:  # the first rescan after the baseline: the mount hangs
            release.wait(30)
        return real_list(self)

    monkeypatch.setattr(LocalSource, "list_frames", first_listing_hangs)
    daemon, thread = in_process_daemon(tmp_path, rescan_interval=0.2)
    try:
        wait_for(lambda: events_named(logs, "scan.failed"), timeout=10)
        (tmp_path / "share").rename(tmp_path / "gone")
        wait_for(lambda: events_named(logs, "share.lost"), timeout=10)
        (tmp_path / "gone").rename(tmp_path / "share")
        wait_for(lambda: events_named(logs, "share.restored"), timeout=10)
        wait_for(lambda: events_named(logs, "scan.finished"), timeout=10)  # a fresh listing
    finally:
        release.set()
        stop(daemon, thread)


def test_a_stuck_worker_stops_the_systemd_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]
) -> None:
    # alive is not enough: a worker stuck (in a copy from a frozen mount, say) must stop the
    # WATCHDOG=1 pings, so that systemd restarts the daemon
    from seestar_watch import daemon as daemon_module
    from seestar_watch import share
    from seestar_watch.notify import Notifier
    from seestar_watch.processor import FrameProcessor

    monkeypatch.setattr(daemon_module, "STALL_LIMIT", 0.5)
    monkeypatch.setattr(share, "CHECK_WHILE_UP", 0.1)
    stuck = threading.Event()
    monkeypatch.setattr(FrameProcessor, "process", lambda self, frame: stuck.wait(30) and "done")
    pings: list[float] = []
    monkeypatch.setattr(Notifier, "watchdog", lambda self: pings.append(time.monotonic()))
    daemon, thread = in_process_daemon(tmp_path, mount_retry=0.1)
    try:
        wait_for(lambda: pings, timeout=30)  # fed while all is well (a deadline: a busy CI)
        write_frame(tmp_path / "share" / "M 42_sub" / "a.fit")
        stalled = wait_for(lambda: events_named(logs, "daemon.stalled"), timeout=15)[0]
        assert stalled["threads"] == ["seestar-watch-worker-1"]
        fed = len(pings)
        time.sleep(2.5)  # negative check: no ping while the worker is stuck
        assert len(pings) == fed
    finally:
        stuck.set()
        stop(daemon, thread)
