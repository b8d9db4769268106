"""The quiet period: events push a frame's deadline back, a rescan's notice does not."""

from __future__ import annotations

import threading
import time

from seestar_watch.settle import QuietTimer
from tests.conftest import wait_for


def test_a_rescan_that_sees_a_frame_being_written_does_not_push_its_deadline_back() -> None:
    quiet_at: dict[str, float] = {}
    timer = QuietTimer(1.0, lambda path: quiet_at.setdefault(path, time.monotonic()) and None)
    timer.start()
    try:
        started = time.monotonic()
        timer.touch("a.fit")  # the last write's event
        time.sleep(0.6)
        assert not timer.touch_if_idle("a.fit")  # a rescan lists it while it waits
        wait_for(lambda: "a.fit" in quiet_at, timeout=5)
        assert quiet_at["a.fit"] - started < 1.0 + 0.4  # not 0.6 + 1.0
        assert timer.touch_if_idle("b.fit")  # a frame nobody announced: looked at
        wait_for(lambda: "b.fit" in quiet_at, timeout=5)
    finally:
        timer.stop(5)


def test_an_event_does_push_the_deadline_back() -> None:
    fired = threading.Event()
    timer = QuietTimer(0.5, lambda path: fired.set())
    timer.start()
    try:
        started = time.monotonic()
        for _ in range(4):
            timer.touch("growing.fit")
            time.sleep(0.3)
        wait_for(fired.is_set, timeout=5)
        assert time.monotonic() - started >= 0.9 + 0.5 - 0.05
    finally:
        timer.stop(5)
