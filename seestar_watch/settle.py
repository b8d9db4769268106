"""Per-path trailing debounce on a single thread.

A path is "quiet" once no event has touched it for `delay` seconds; each touch
pushes its deadline back. One thread and one heap of deadlines serve every
path: a burst of 2,000 new frames costs 2,000 heap entries, not 2,000 threads
(one threading.Timer per file would). watchdog's EventDebouncer is a global
batch window, not this.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("seestar_watch.settle")

# on_quiet(path) returns None when it is done with the path, or the number of
# seconds after which it wants to look at the path again (still arriving).
QuietHandler = Callable[[str], float | None]


class Settler:
    def __init__(
        self,
        delay: float,
        on_quiet: QuietHandler,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "seestar-watch-settle",
    ) -> None:
        self.delay = delay
        self._on_quiet = on_quiet
        self._clock = clock
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str]] = []
        self._armed: dict[str, int] = {}  # path -> sequence number of its live heap entry
        self._sequence = itertools.count()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._cond:
            if self._thread is not None or self._stopped:
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def touch(self, path: str) -> bool:
        """(Re)start the quiet period of `path`; True when it was not waiting already."""
        with self._cond:
            if self._stopped:
                return False
            fresh = path not in self._armed
            self._arm(path, self._clock() + self.delay)
            self._cond.notify()
            return fresh

    def forget(self, path: str) -> None:
        with self._cond:
            self._armed.pop(path, None)

    def stop(self, timeout: float | None = None) -> bool:
        """Drop every pending path and end the thread; False if it did not end in time."""
        with self._cond:
            self._stopped = True
            self._armed.clear()
            self._heap.clear()
            self._cond.notify()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _arm(self, path: str, deadline: float) -> None:
        sequence = next(self._sequence)
        self._armed[path] = sequence
        heapq.heappush(self._heap, (deadline, sequence, path))
        # Entries superseded by a later touch stay in the heap until they surface;
        # rebuild when they dominate so a file written in 1,000 chunks stays cheap.
        if len(self._heap) > 2 * len(self._armed) + 1024:
            self._heap = [e for e in self._heap if self._armed.get(e[2]) == e[1]]
            heapq.heapify(self._heap)

    def _next_due(self) -> str | None:
        """Wait for the earliest live deadline; the path that is due, or None once stopped."""
        with self._cond:
            while not self._stopped:
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, sequence, path = self._heap[0]
                if self._armed.get(path) != sequence:
                    heapq.heappop(self._heap)  # superseded or forgotten
                    continue
                remaining = deadline - self._clock()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                heapq.heappop(self._heap)
                del self._armed[path]
                return path
            return None

    def _run(self) -> None:
        while (path := self._next_due()) is not None:
            try:
                again = self._on_quiet(path)
            except Exception:  # the handler guards itself; this keeps the thread alive regardless
                log.exception("settle.handler_failed", path=path)
                continue
            if again is not None:
                with self._cond:
                    if not self._stopped and path not in self._armed:
                        self._arm(path, self._clock() + again)
                        self._cond.notify()
