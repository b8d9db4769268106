"""The one worker loop: claim a frame from the ledger, process it, wait when there is none.

The daemon's workers, `run --once` and `process` all drain the ledger through `Worker`;
each says only how it claims a frame (the next one due, or one it named) and how it waits
when there is none (for a wake-up, for a retry's delay, or not at all). `prepare_ledger`
is what every owner of the ledger does before the first frame runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from seestar_watch import children
from seestar_watch.ledger import Frame, Ledger
from seestar_watch.log import get_logger
from seestar_watch.outcomes import Attempt
from seestar_watch.processor import FrameProcessor
from seestar_watch.sources import ShareState

log = get_logger("seestar_watch.daemon")

Claim = Callable[[], Frame | None]
Wait = Callable[[], bool]  # when nothing can be claimed: True to look again, False: done


def prepare_ledger(ledger: Ledger) -> None:
    """The ledger is ours alone now: what a killed daemon left behind is stopped (its
    commands' process groups) and its `running` frames are pending again."""
    children.stop_orphans(ledger)
    if recovered := ledger.recover_running():
        log.warning(
            "ledger.recovered",
            frames=recovered,
            note="left running by a daemon that did not stop cleanly",
        )


class Wakeup:
    """Where idle workers wait: woken by a frame that arrived, the share back, or a stop."""

    def __init__(self) -> None:
        self._ready = threading.Condition()

    def wait(self, seconds: float) -> None:
        with self._ready:
            self._ready.wait(seconds)

    def one(self) -> None:
        with self._ready:
            self._ready.notify()

    def everyone(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def share_up(self, state: ShareState) -> None:  # a ShareListener (share.py)
        self.everyone()

    def share_down(self, state: ShareState) -> None:
        pass  # the workers find out at their next claim


class Worker:
    """Processes claimed frames, and keeps what people are told of them: the frames that
    failed in this run and the last one finished. One Worker serves every worker thread."""

    def __init__(
        self,
        processor: FrameProcessor,
        stopping: threading.Event,
        beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.processor = processor
        self.stopping = stopping
        self.beat = beat  # this thread is turning (the systemd watchdog's evidence)
        self.failed = 0  # frames that ended `failed` during this run
        self.last_frame = ""  # "<name> <state>" of the last frame finished
        self._lock = threading.Lock()  # workers finish frames at the same time

    def drain(self, claim: Claim, wait: Wait) -> Iterator[tuple[Frame, Attempt]]:
        """Claim and process frames until a stop, or until `wait` says no more will come;
        each frame with what its attempt came to, as it happens."""
        while not self.stopping.is_set():
            self.beat()
            frame = claim()
            if frame is None:
                if not wait():
                    return
                continue
            state = self.processor.process(frame)
            with self._lock:
                self.failed += state == "failed"
                self.last_frame = f"{frame.version.relpath.rpartition('/')[2]} {state}"
            yield frame, state
