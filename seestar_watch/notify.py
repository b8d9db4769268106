"""The systemd notification protocol (sd_notify), written out: one datagram per message.

With `Type=notify` systemd waits for READY=1, shows the last STATUS= line in
`systemctl status`, restarts the service when WATCHDOG=1 stops arriving, and
knows a stop is under way from STOPPING=1. Outside systemd ($NOTIFY_SOCKET
unset) every call does nothing.

A message is newline-separated KEY=value lines, so a STATUS built from a file
name is escaped onto one line: a newline in a name cannot add an assignment.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from seestar_watch.log import escape


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # systemd says "@name" for a socket in the abstract namespace (leading NUL)
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = _watchdog_interval(env)
        self._last_watchdog = 0.0
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={escape(status)}")
        self._last_status = status

    def status(self, status: str) -> None:
        """Send STATUS= when it changed since the last one."""
        if status != self._last_status:
            self._send(f"STATUS={escape(status)}")
            self._last_status = status

    def watchdog(self) -> None:
        """WATCHDOG=1 at half the interval systemd asked for; call it from the main loop only."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_watchdog >= self.watchdog_interval / 2:
            self._send("WATCHDOG=1")
            self._last_watchdog = now

    def stopping(self, status: str) -> None:
        self._send(f"STOPPING=1\nSTATUS={escape(status)}")

    def _send(self, message: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode("utf-8", "backslashreplace"), self._address)
        except OSError:
            pass  # systemd gone or not listening: the daemon carries on regardless


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds from WATCHDOG_USEC, when it is meant for this process (WATCHDOG_PID)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000
