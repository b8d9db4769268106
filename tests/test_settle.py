"""The quiet period: events push a frame's deadline back, a rescan's notice does not."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

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


def test_a_file_that_stays_incomplete_is_looked_at_less_and_less_often(tmp_path: Path) -> None:
    """A guest's thousands of empty .fit files must not cost a header read each every
    debounce_delay, all night: the longer one stays as it is, the rarer the looks."""
    from seestar_watch.settle import Settle
    from seestar_watch.sources.local import LocalFrame, LocalSource

    opened: list[float] = []

    class Counting(LocalSource):
        def open(self, relpath: str) -> LocalFrame:
            opened.append(time.monotonic())
            return super().open(relpath)

    (tmp_path / "empty.fit").write_bytes(b"")
    settle = Settle(
        Counting(tmp_path), 0.05, incomplete_timeout=60, on_settled=print, on_gave_up=print
    )
    settle.start()
    try:
        settle.touch("empty.fit")
        time.sleep(4)  # counting looks: nothing to wait for
    finally:
        settle.stop(5)
    gaps = [b - a for a, b in itertools.pairwise(opened)]
    assert len(opened) < 25, len(opened)  # every 0.05 s it would be 80
    assert gaps[-1] > 4 * gaps[0]  # and further and further apart
