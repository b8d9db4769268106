"""The intake thread through its public face, in this process: a real folder, a real ledger,
the real share supervisor and settle; only the daemon around it is left out."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seestar_watch.config import parse_config
from seestar_watch.intake import FirstStart, Intake
from seestar_watch.ledger import Ledger
from seestar_watch.share import ShareSupervisor
from seestar_watch.sources import open_source
from tests.conftest import wait_for, write_frame


class Running:
    """An Intake on its own thread over `share`, with the share supervisor telling it."""

    def __init__(self, tmp_path: Path, first_start: FirstStart | None = None) -> None:
        self.share = tmp_path / "share"
        self.share.mkdir(exist_ok=True)
        raw: dict[str, Any] = {
            "image_watcher": {
                "watch_path": str(self.share),
                "debounce_delay": 0.1,
                "mount_retry": 0.2,
                "rescan_interval": 0,
            },
            "pipeline": {"command": ["true"]},
        }
        config = parse_config(raw, tmp_path / "config.yaml")
        self.ledger = Ledger.open(tmp_path / "ledger.sqlite3")
        self.stopping = threading.Event()
        source = open_source(config.image_watcher)
        self.supervisor = ShareSupervisor(source, 0.2, self.stopping)
        self.pending = threading.Semaphore(0)
        decided = first_start or FirstStart.decide(self.ledger, asked=False, configured=False)
        self.intake = Intake(
            config.image_watcher, source, self.ledger, self.supervisor,
            on_pending=self.pending.release, first_start=decided,
        )  # fmt: skip
        self.supervisor.listen(self.intake)
        self.threads = [
            threading.Thread(target=self.supervisor.run, daemon=True),
            threading.Thread(target=self.intake.run, args=(self.stopping,), daemon=True),
        ]

    def start(self) -> Running:
        for thread in self.threads:
            thread.start()
        return self

    def state_of(self, relpath: str) -> str | None:
        return self.ledger.latest_state(relpath)

    def stop(self) -> None:
        self.stopping.set()
        self.supervisor.poke()
        self.intake.poke()
        for thread in self.threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in self.threads)
        self.ledger.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    intake = Running(tmp_path)
    yield intake
    intake.stop()


def test_a_first_start_skips_what_is_there_and_records_what_arrives(
    tmp_path: Path, running: Running
) -> None:
    write_frame(running.share / "M 42_sub" / "there.fit")
    running.start()
    wait_for(lambda: running.state_of("M 42_sub/there.fit") == "skipped")
    write_frame(running.share / "M 42_sub" / "new.fit")
    assert running.pending.acquire(timeout=10)  # told: a frame waits in the ledger
    assert running.state_of("M 42_sub/new.fit") == "pending"


def test_a_first_start_asked_to_run_what_is_there_records_it_pending(tmp_path: Path) -> None:
    probe = Running(tmp_path)
    first = FirstStart.decide(probe.ledger, asked=True, configured=False)
    probe.ledger.close()
    assert first.new_ledger and first.run_existing and first.asked
    running = Running(tmp_path, first)
    write_frame(running.share / "M 42_sub" / "there.fit")
    running.start()
    try:
        assert running.pending.acquire(timeout=10)
        assert running.state_of("M 42_sub/there.fit") == "pending"
    finally:
        running.stop()


def test_a_share_that_comes_back_is_caught_up_at_once(
    tmp_path: Path, running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seestar_watch import share

    monkeypatch.setattr(share, "CHECK_WHILE_UP", 0.1)  # the loss is seen within a tenth
    running.start()
    wait_for(lambda: not running.ledger.is_new())  # the first start's baseline is taken
    gone = tmp_path / "gone"
    running.share.rename(gone)
    wait_for(lambda: not running.supervisor.available)
    write_frame(gone / "M 42_sub" / "meanwhile.fit")  # written while the share was away
    gone.rename(running.share)
    # told by the supervisor (share_up): the catch-up records it, with no rescan due
    assert running.pending.acquire(timeout=10)
    assert running.state_of("M 42_sub/meanwhile.fit") == "pending"


def test_on_a_ledger_that_ran_before_nothing_is_skipped_again(tmp_path: Path) -> None:
    first = Running(tmp_path).start()
    write_frame(first.share / "M 42_sub" / "a.fit")  # skipped or pending: either is a row
    wait_for(lambda: first.state_of("M 42_sub/a.fit") is not None)
    first.stop()
    again = Running(tmp_path)
    assert again.intake.first_start.new_ledger is False
    write_frame(again.share / "M 42_sub" / "while_off.fit")
    again.start()
    try:
        assert again.pending.acquire(timeout=10)  # run, not skipped as a first start would
        assert again.state_of("M 42_sub/while_off.fit") == "pending"
    finally:
        again.stop()
