"""The daemon's own counters, updated by several workers at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from seestar_watch.config import parse_config
from seestar_watch.daemon import Daemon
from seestar_watch.ledger import Frame
from seestar_watch.sources import Version


class _Failing:
    """A frame processor whose every frame fails at once (the ledger is not touched)."""

    def process(self, frame: Frame) -> str:
        return "failed"


def test_failures_counted_by_many_workers_at_once_are_all_counted(tmp_path: Path) -> None:
    raw: dict[str, Any] = {
        "image_watcher": {"watch_path": str(tmp_path)},
        "pipeline": {"command": ["true"]},
    }
    daemon = Daemon(parse_config(raw, tmp_path / "config.yaml"))
    frame = Frame(1, Version(b"a.fit", 1, 1), {}, 1, None)
    workers, each = 4, 200

    def switch_threads_between_opcodes(frame: FrameType, event: str, _: Any) -> Any:
        # let another thread run between any two bytecodes of Daemon._process, so a
        # read-modify-write that is not under a lock loses updates, as it can in production
        if frame.f_code is Daemon._process.__code__:
            frame.f_trace_opcodes = True
            if event == "opcode":
                time.sleep(0)
            return switch_threads_between_opcodes
        return None

    threading.settrace(switch_threads_between_opcodes)
    try:
        threads = [
            threading.Thread(
                target=lambda: [daemon._process(_Failing(), frame) for _ in range(each)]  # type: ignore[arg-type]
            )
            for _ in range(workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        threading.settrace(None)  # type: ignore[arg-type]
    assert daemon.failed == workers * each
