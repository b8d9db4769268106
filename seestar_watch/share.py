"""The share supervisor: the source's availability, turned into transitions.

It asks the source (bounded by a timeout: a hung share never holds this thread)
whether it is there, and tells its listeners (the intake, the alert rules, the workers'
wake-up) of every change: ready, lost, restored. A listener only sets flags; whatever
touches the share runs on the daemon's other threads. It also keeps a flapping share
from flooding the log.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from seestar_watch.log import get_logger
from seestar_watch.sources import ShareState, Source

log = get_logger("seestar_watch.share")

PROBE_TIMEOUT = 10.0
CHECK_WHILE_UP = 5.0  # seconds between two checks of a share that answers
# Two real outages within a minute are two outages, each said; five or more (ten
# transitions) within a minute is a flapping share: one line, not hundreds.
FLAP_WINDOW = 60.0  # this many seconds ...
FLAP_LIMIT = 10  # ... with this many transitions is flapping


class ShareListener(Protocol):
    """Told of every change of the share, on the share thread: only set flags."""

    def share_up(self, state: ShareState) -> None: ...

    def share_down(self, state: ShareState) -> None: ...


class ShareSupervisor:
    """Checks the share on its own thread and tells its listeners of every change."""

    def __init__(
        self,
        source: Source,
        mount_retry: float,
        stop: threading.Event,
        listeners: Iterable[ShareListener] = (),
    ) -> None:
        self.source = source
        self.mount_retry = mount_retry
        self.state: ShareState | None = None
        self.turns = 0  # checks done: the daemon's health check sees it move
        self.on_turn: Callable[[], None] = lambda: None
        self.waited = False  # the share was not there at the first check
        self._stop = stop
        self._listeners = list(listeners)
        self._poke = threading.Event()
        self._ever_up = False
        self._transitions: deque[float] = deque()
        self._quiet_since: float | None = None  # set while flapping lines are held back

    def listen(self, listener: ShareListener) -> None:
        """Tell `listener` of the changes from now on (before the share thread starts)."""
        self._listeners.append(listener)

    @property
    def available(self) -> bool:
        return self.state is not None and self.state.is_available

    def check(self) -> ShareState:
        return self.source.check(PROBE_TIMEOUT)

    def poke(self) -> None:
        """Check again now (a scan or copy just failed, or a stop was asked for)."""
        self._poke.set()

    def run(self) -> None:
        """Check, then sleep until the next check is due, a poke, or a stop (which pokes:
        the daemon's lifecycle calls poke(), so one Event wakes this thread for both)."""
        while not self._stop.is_set():
            self._apply(self.check())
            self.turns += 1
            self.on_turn()
            self._poke.clear()
            self._poke.wait(CHECK_WHILE_UP if self.available else self.mount_retry)

    def _apply(self, state: ShareState) -> None:
        was_up = self.available
        previous, self.state = self.state, state
        if state.is_available and not was_up:
            self._transition("share.restored" if self._ever_up else "share.ready", state)
            self._ever_up = True
            for listener in self._listeners:
                listener.share_up(state)
        elif not state.is_available and was_up:
            self._transition("share.lost", state)
            for listener in self._listeners:
                listener.share_down(state)
        elif not state.is_available and previous is None:
            self.waited = True
            log.warning("share.waiting", reason=state.reason, retry_every_s=self.mount_retry)
        self._note_if_steady()

    def _transition(self, event: str, state: ShareState) -> None:
        now = time.monotonic()
        self._transitions.append(now)
        while self._transitions and now - self._transitions[0] > FLAP_WINDOW:
            self._transitions.popleft()
        if len(self._transitions) >= FLAP_LIMIT and self._quiet_since is None:
            self._quiet_since = now
            log.warning(
                "share.flapping",
                transitions=len(self._transitions),
                window_s=FLAP_WINDOW,
                note="holding back share lines until it settles",
            )
        if self._quiet_since is None:
            log.log(
                30 if event == "share.lost" else 20,
                event,
                reason=state.reason or None,
                fstype=state.mount.fstype if state.mount else None,
            )

    def _note_if_steady(self) -> None:
        if self._quiet_since is None or not self._transitions:
            return
        if time.monotonic() - self._transitions[-1] > FLAP_WINDOW:
            self._quiet_since = None
            log.info(
                "share.steady",
                available=self.available,
                reason=self.state.reason if self.state else None,
            )
