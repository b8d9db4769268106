"""Stopping: one stop flag, a forced stop, the shutdown grace, and the signals that set them;
and threads kept running until then, whatever escapes them.

Used by `run` and `process` alike. Signal handlers only set flags; every wait is on
the stop Event, so a stop interrupts it. The first SIGTERM or Ctrl-C asks for a
graceful stop (a running command gets `shutdown_grace` seconds); a second one
forces it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from seestar_watch.log import get_logger

log = get_logger("seestar_watch.daemon")

RESTART_PAUSE = 1.0  # seconds before a thread that failed is started again, doubling ...
RESTART_PAUSE_MAX = 20.0  # ... up to this (under the stall limit: the watchdog stays fed)


@contextmanager
def private_files() -> Iterator[int]:
    """What this process creates is its user's alone (0600 files, 0700 folders, as the
    units' UMask=0077): the ledger and its WAL, the archive copies and the daemon's view
    tell what the night was. Yields the umask it replaced: the command runs with that one,
    as it would from the user's shell."""
    previous = os.umask(0o077)
    os.umask(previous | 0o077)
    try:
        yield previous
    finally:
        os.umask(previous)


class Lifecycle:
    def __init__(self, shutdown_grace: float) -> None:
        self.shutdown_grace = shutdown_grace
        self.stopping = threading.Event()
        self._forced = threading.Event()
        self._stopping_since: float | None = None
        self._on_stop: list[Any] = []
        self.beats: dict[str, float] = {}  # thread name -> when it last turned

    def request_stop(self, *, force: bool = False) -> None:
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
        self.stopping.set()
        if force:
            self._forced.set()
        for wake in self._on_stop:
            wake()

    def on_stop(self, wake: Any) -> None:
        """Call `wake()` (it must only set a flag) when a stop is requested."""
        self._on_stop.append(wake)

    def wait(self, seconds: float | None) -> bool:
        """Sleep up to `seconds`; True as soon as a stop is requested."""
        return self.stopping.wait(seconds)

    def beat(self) -> None:
        """The calling thread is turning (its loop, a running command, a ledger retry)."""
        self.beats[threading.current_thread().name] = time.monotonic()

    def stalled(self, names: list[str], limit: float) -> list[str]:
        """The threads among `names` that have not turned for `limit` seconds."""
        now = time.monotonic()
        return [name for name in names if now - self.beats.get(name, now) > limit]

    def should_abort(self) -> bool:
        """A running command is stopped on a forced stop, or once the shutdown grace is over.
        Asked every tenth of a second while a command runs: a beat of the worker's."""
        self.beat()
        if self._forced.is_set():
            return True
        since = self._stopping_since
        return since is not None and time.monotonic() - since >= self.shutdown_grace

    def keep_running(
        self,
        name: str,
        target: Callable[[], None],
        on_failure: Callable[[str, Exception], None],
        *,
        pause: float = RESTART_PAUSE,
    ) -> None:
        """Run `target` until it returns or a stop is asked for. An exception that escapes
        it is a bug, and the night must outlive it: it is reported (`on_failure`, with the
        traceback logged) and `target` is started again, after a growing pause."""
        while not self.stopping.is_set():
            try:
                target()
                return
            except Exception as exc:
                log.exception(
                    "daemon.thread_failed",
                    thread_name=name,
                    error=f"{type(exc).__name__}: {exc}",
                    restart_in_s=pause,
                )
                on_failure(name, exc)
            if self.wait(pause):
                return
            pause = min(2 * pause, RESTART_PAUSE_MAX)
            log.warning("daemon.thread_restarted", thread_name=name)

    @contextmanager
    def handling_signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT request a graceful stop; a second one forces it."""

        def handle(signum: int, _: Any) -> None:
            self.request_stop(force=self.stopping.is_set())

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
