"""Settle: the whole of "this frame has finished arriving".

A frame has arrived once (1) nothing has touched it for `debounce_delay` seconds,
(2) its FITS header says all the data it promises is there (a stalled write that
paused for a moment is still recognisably incomplete), and (3) this version of it
(size, modification time) has not been reported before. A frame that stays quiet
but incomplete is given up on after `incomplete_timeout`, counted from the first
time that version was seen incomplete. The outcome goes to one of two callables:
settled, or gave up.

The quiet period is a per-path trailing debounce on a single thread: one heap of
deadlines serves every path, so a burst of 2,000 new frames costs 2,000 heap
entries, not 2,000 threads (one threading.Timer per file would). watchdog's
EventDebouncer is a global batch window, not this.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from seestar_watch.errors import SHARE_ERRNOS
from seestar_watch.fitsheader import HeaderRead, Status, read_header_of
from seestar_watch.log import Repeats, get_logger
from seestar_watch.sources import Source, Stamp, Version

log = get_logger("seestar_watch.settle")
MAX_REMEMBERED = 100_000  # versions remembered to report each once; ~10 nights of frames
RECHECK_MAX = 30.0  # seconds between two looks at a frame that stays incomplete, at most

# on_quiet(path) returns None when it is done with the path, or the number of
# seconds after which it wants to look at the path again (still arriving).
QuietHandler = Callable[[str], float | None]


class QuietTimer:
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
        self._failures = Repeats()

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

    def touch_if_idle(self, path: str) -> bool:
        """Start the quiet period of `path` unless it is already waiting (a rescan that sees
        a frame being written must not push its deadline back); True when it was armed."""
        with self._cond:
            if self._stopped or path in self._armed:
                return False
            self._arm(path, self._clock() + self.delay)
            self._cond.notify()
            return True

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
            except Exception as exc:  # that path's problem: the thread goes on for the others
                if self._failures.first(exc):  # once per kind: a rescan brings the path back
                    log.exception("settle.handler_failed", path=path)
                continue
            if again is not None:
                with self._cond:
                    if not self._stopped and path not in self._armed:
                        self._arm(path, self._clock() + again)
                        self._cond.notify()


@dataclass(frozen=True)
class GaveUp:
    """A frame that stayed incomplete (or unreadable) for incomplete_timeout seconds."""

    relpath: str
    status: Status  # INCOMPLETE, or UNAVAILABLE (the share's fault, not the frame's)
    reason: str
    waited: float
    entry: Version | None  # the version given up on, when one was seen


OnSettled = Callable[[Version, HeaderRead], None]  # the version that arrived, and its header
OnGaveUp = Callable[[GaveUp], None]


class Settle:
    """Turns "something happened to this path" into "this version finished arriving"."""

    def __init__(
        self,
        source: Source,
        delay: float,
        *,
        incomplete_timeout: float,
        on_settled: OnSettled,
        on_gave_up: OnGaveUp,
        name: str = "seestar-watch-settle",
        wait_for_complete: bool = True,
    ) -> None:
        self.source = source
        self.delay = delay
        self.incomplete_timeout = incomplete_timeout
        # False: quiet is enough, what the header says of the data is the caller's business
        self.wait_for_complete = wait_for_complete
        self._on_settled = on_settled
        self._on_gave_up = on_gave_up
        self._timer = QuietTimer(delay, self._on_quiet, name=name)
        self._stopped = threading.Event()
        # relpath -> ((size, mtime_ns) first seen incomplete, when): a rescan's touch must not
        # restart the give-up clock of a frame that stays truncated all night
        self._incomplete_since: dict[str, tuple[Stamp | None, float]] = {}
        # relpath -> (size, mtime_ns) last reported (settled or given up on): a late polling
        # event after a frame was reported complete and unchanged must not report it again
        self._reported: dict[str, Stamp] = {}

    def start(self) -> None:
        self._timer.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Drop every waiting path; no callback starts after this returns (if it ended)."""
        self._stopped.set()
        return self._timer.stop(timeout)

    def touch(self, relpath: str) -> bool:
        """Something happened to `relpath`: (re)start its quiet period; True when new."""
        return self._timer.touch(relpath)

    def notice(self, relpath: str) -> bool:
        """A listing found `relpath` unknown: look at it, unless it is waiting already."""
        return self._timer.touch_if_idle(relpath)

    def _on_quiet(self, relpath: str) -> float | None:
        """`relpath` has been quiet: report it, or look again in a while (None: done)."""
        try:
            entry = self.source.stat(relpath)
        except OSError as exc:
            if exc.errno in SHARE_ERRNOS:
                return self._retry(relpath, None, Status.UNAVAILABLE, "share unavailable")
            entry = None  # gone
        if entry is None or self._reported.get(relpath) == entry.stamp:
            self._incomplete_since.pop(relpath, None)
            return None
        header = read_header_of(lambda: self.source.open(relpath))
        incomplete = header.status is Status.INCOMPLETE and self.wait_for_complete
        if incomplete or header.status is Status.UNAVAILABLE:
            return self._retry(relpath, header.version, header.status, header.reason)
        self._incomplete_since.pop(relpath, None)
        version = header.version
        if header.status is Status.GONE or version is None or self._stopped.is_set():
            return None
        if self._reported.get(relpath) != version:
            _remember(self._reported, relpath, version)
            self._on_settled(Version(relpath, *version), header)
        return None

    def _retry(
        self, relpath: str, version: Stamp | None, status: Status, reason: str
    ) -> float | None:
        """Look again later, or give up once this version has been incomplete for too long.

        The clock starts the first time *this version* (size, mtime) is seen incomplete and
        restarts only when the file changes: a frame that grows is being written, a frame
        that stays cut off at 8 KB is given up on after incomplete_timeout however many
        events or rescans touch it meanwhile. An unavailable share (no version known)
        keeps the clock of whatever version was seen last.
        """
        if version is not None and self._reported.get(relpath) == version:
            return None  # given up on once already; a new version starts afresh
        now = time.monotonic()
        seen, since = self._incomplete_since.get(relpath, (version, now))
        if version is not None and seen is not None and seen != version:
            since = now  # it changed: still arriving
        self._incomplete_since[relpath] = (version if version is not None else seen, since)
        waited = now - since
        if waited < self.incomplete_timeout:
            # looked at less often the longer it stays as it is (a guest's thousands of
            # empty .fit files must not cost a header read each every debounce_delay); one
            # being written is touched by its events, which look at it sooner
            again = min(max(self.delay, 0.1, waited / 4), RECHECK_MAX)
            return min(again, max(0.1, self.incomplete_timeout - waited))
        self._incomplete_since.pop(relpath, None)
        entry = None
        if seen is not None:
            _remember(self._reported, relpath, seen)
            entry = Version(relpath, *seen)
        if not self._stopped.is_set():
            self._on_gave_up(GaveUp(relpath, status, reason, now - since, entry))
        return None


def _remember(memory: dict[str, Stamp], relpath: str, version: Stamp) -> None:
    """memory[relpath] = version, most recent last, forgetting the oldest beyond the bound."""
    memory.pop(relpath, None)
    memory[relpath] = version
    if len(memory) > MAX_REMEMBERED:
        del memory[next(iter(memory))]
