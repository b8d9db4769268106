"""Sending alerts with apprise, on a thread of its own: never in the way of a frame.

The daemon hands an alert over with `send()`, which only puts it on a bounded queue
(full: the oldest alert is dropped, with a log line). One thread sends each alert to
every URL with a timeout per try and a few retries with growing waits; a failure is
logged (`alert.failed`) and never raised. URLs hold tokens and passwords: a URL is
named by its place in `alerts.urls` and its service, never shown, and apprise's own
log lines (which may quote them) are kept out of ours.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

import apprise

from seestar_watch.alerts import Alert
from seestar_watch.log import get_logger

log = get_logger("seestar_watch.alerts")

SEND_TIMEOUT = 10.0  # seconds to connect, and to wait for an answer, per try
RETRY_WAITS = (5.0, 30.0, 120.0)  # seconds before each retry of a send that failed
QUEUE_SIZE = 50  # alerts waiting; beyond it the oldest goes

# apprise logs its failures with details of the target: ours say it, masked
logging.getLogger("apprise").setLevel(logging.CRITICAL + 1)


def url_problems(urls: tuple[str, ...]) -> list[str]:
    """One line per URL apprise cannot use (check-config and run), naming only its scheme."""
    return [
        f"alerts.urls[{n}]: not a notification URL apprise knows (scheme {_scheme(url)!r};"
        " see https://github.com/caronc/apprise/wiki for the services and their URLs)"
        for n, url in enumerate(urls)
        if apprise.Apprise.instantiate(url) is None
    ]


def _scheme(url: str) -> str:
    return url.partition("://")[0][:20] if "://" in url else "none"


@dataclass(frozen=True)
class _Target:
    label: str  # how logs and alert-test name it: its place in the list and the service
    plugin: Any


def _targets(urls: tuple[str, ...], timeout: float) -> list[_Target]:
    """The URLs as apprise plugins. A URL is never shown, even masked: tokens sit in
    different places for each service (an ntfy topic is its own password)."""
    targets = []
    for n, url in enumerate(urls):
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            continue  # refused by check-config and run before this
        plugin.socket_connect_timeout = timeout
        plugin.socket_read_timeout = timeout
        targets.append(_Target(f"alerts.urls[{n}] ({plugin.service_name})", plugin))
    return targets


class AlertSender:
    def __init__(
        self,
        urls: tuple[str, ...],
        *,
        timeout: float = SEND_TIMEOUT,
        retry_waits: tuple[float, ...] = RETRY_WAITS,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.targets = _targets(urls, timeout)
        self.retry_waits = retry_waits
        self._queue: queue.Queue[Alert | None] = queue.Queue(queue_size)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="seestar-watch-alerts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def send(self, alert: Alert | None) -> None:
        """Queue it and return at once; a full queue loses its oldest alert, never a frame.
        (None asks the thread to stop.)"""
        while True:
            try:
                self._queue.put_nowait(alert)
                return
            except queue.Full:
                try:
                    dropped = self._queue.get_nowait()
                except queue.Empty:
                    continue
                if dropped is not None:
                    log.warning("alert.dropped", title=dropped.title, note="too many waiting")

    def stop(self, timeout: float) -> None:
        """Send what is queued for up to `timeout` seconds, then stop (retries are cut)."""
        self._stopping.set()
        self.send(None)
        self._thread.join(timeout)

    def send_now(self, alert: Alert) -> list[tuple[str, bool]]:
        """`alert-test`: one try to each URL, here and now: (its label, whether it went)."""
        return [(target.label, self._try(target, alert)) for target in self.targets]

    def _run(self) -> None:
        while (alert := self._queue.get()) is not None:
            self._deliver_to_all(alert)
        while True:  # stopping: what is still queued gets one try (retries are cut)
            try:
                alert = self._queue.get_nowait()
            except queue.Empty:
                return
            if alert is not None:
                self._deliver_to_all(alert)

    def _deliver_to_all(self, alert: Alert) -> None:
        for target in self.targets:
            self._deliver(target, alert)

    def _deliver(self, target: _Target, alert: Alert) -> None:
        for attempt, wait in enumerate((*self.retry_waits, None), start=1):
            if self._try(target, alert):
                log.info("alert.sent", kind=alert.kind, title=alert.title, to=target.label)
                return
            if wait is None or self._stopping.wait(wait):
                break
            log.debug("alert.retrying", to=target.label, attempt=attempt, retry_in_s=wait)
        log.error(
            "alert.failed",
            kind=alert.kind,
            title=alert.title,
            to=target.label,
            attempts=attempt,
            note="the notification service did not take it (see alert-test); frames go on",
        )

    @staticmethod
    def _try(target: _Target, alert: Alert) -> bool:
        try:
            return bool(target.plugin.notify(body=alert.body, title=alert.title))
        except Exception:  # a plugin's bug must not end the sender
            log.debug("alert.plugin_error", to=target.label, exc_info=True)
            return False
