"""A blocking call on a helper thread, waited for at most a timeout, one at a time.

A call on a hung share (a FUSE or CIFS mount whose server went to sleep) can block
in the kernel for minutes; whoever asks must get an answer within its timeout, and
a share that stays hung must hold one stuck thread, never a growing pile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ProbeTimeout(Exception):
    pass


class SingleFlight:
    """Runs a blocking call on a helper thread and waits for it at most `timeout` seconds.

    Callers that arrive while a call is in flight wait for *that* call instead of
    starting another, so a hung share holds one thread, not one per attempt.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._box: dict[str, Any] = {}

    def call(self, function: Callable[[], T], timeout: float) -> T:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                box: dict[str, Any] = {}
                self._box = box
                self._thread = threading.Thread(
                    target=self._run, args=(function, box), name=self._name, daemon=True
                )
                self._thread.start()
            thread, box = self._thread, self._box
        thread.join(timeout)
        if thread.is_alive():
            raise ProbeTimeout(f"no answer within {timeout:.1f} s")
        if "error" in box:
            raise box["error"]
        return box["result"]  # type: ignore[no-any-return]

    @staticmethod
    def _run(function: Callable[[], Any], box: dict[str, Any]) -> None:
        try:
            box["result"] = function()
        except BaseException as exc:  # handed to the caller, who decides
            box["error"] = exc
