"""Alerts from the real daemon to a real local receiver (apprise's JSON webhook)."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from seestar_watch.alerts import Alert
from seestar_watch.alertsender import AlertSender
from seestar_watch.tools.synthetic import Sky, frame_bytes, star_field
from tests.conftest import wait_for, write_frame
from tests.harness import DaemonProcess, Scope, started_daemon
from tests.smbshare import SambaShare, telescope_writes

SECRET = "s3cr3t-t0ken"


class Receiver:
    """An HTTP endpoint taking apprise's JSON posts: it answers, hangs, or is not there."""

    def __init__(self, behaviour: str = "answer") -> None:
        self.behaviour = behaviour
        self.messages: list[dict[str, Any]] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.behaviour == "hang":
                    receiver.release.wait(60)
                    return
                receiver.messages.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self) -> str:
        return f"json://alerts:{SECRET}@127.0.0.1:{self.port}/hook"

    def titles(self) -> list[str]:
        return [str(message["title"]) for message in list(self.messages)]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    answering = Receiver()
    yield answering
    answering.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens there once closed


def alerting(tmp_path: Path, urls: list[str], **alerts: Any) -> Scope:
    scope = Scope(tmp_path, alerts={"urls": urls, **alerts}, pipeline={"retries": 0})
    os.chmod(scope.config_path, 0o600)  # it holds a token
    return scope


pytestmark = pytest.mark.slow


def test_a_pipeline_failing_on_every_frame_gives_one_message_for_many(
    tmp_path: Path, receiver: Receiver, daemons: list[DaemonProcess]
) -> None:
    scope = alerting(tmp_path, [receiver.url()], min_interval=4)
    scope.behave("fail")
    daemon = started_daemon(scope, daemons, until="watcher.started")
    for n in range(6):
        write_frame(scope.share / "M 42_sub" / f"{n}.fit")
    daemon.wait_for_event("frame.failed", count=6, timeout=30)

    def counted() -> int:
        return sum(
            1 if title.startswith("Frame failed") else int(title.split()[0])
            for title in receiver.titles()
        )

    wait_for(lambda: counted() == 6, timeout=20)
    assert len(receiver.messages) <= 3  # the first at once; the rest gathered
    assert "photometry failed: no stars" in receiver.messages[-1]["message"]
    # the last message may hold one failure alone, when the frames failed on both sides
    # of an interval; the gathered one (6 failures in <= 3 messages: there is one) says
    # what to do about them
    gathered = [m for m in list(receiver.messages) if not m["title"].startswith("Frame failed")]
    assert "seestar-watch retry --failed" in gathered[-1]["message"]
    daemon.stop()
    assert SECRET not in daemon.text()
    assert daemon.events("alert.sent")[0]["to"] == "alerts.urls[0] (JSON)"


def test_a_scope_that_stops_delivering_is_said_once(
    tmp_path: Path, receiver: Receiver, daemons: list[DaemonProcess]
) -> None:
    scope = alerting(tmp_path, [receiver.url()], stalled_after=2)
    os.chmod(scope.config_path, 0o644)  # others may read its token: said at start
    daemon = started_daemon(scope, daemons, until="watcher.started")
    (readable,) = daemon.events("config.readable")
    assert f"chmod 600 {scope.config_path}" in readable["warning"]
    write_frame(scope.share / "M 42_sub" / "a.fit")
    daemon.wait_for_event("pipeline.finished")
    wait_for(receiver.titles, timeout=15)
    time.sleep(3)  # a second message would have come by now: once per occurrence
    assert receiver.titles() == ["No new frame for 2 s"]
    assert "The last frame came at" in receiver.messages[0]["message"]


def synthetic(path: Path, stars: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(frame_bytes(Sky(stars=star_field(stars, seed=seed), seed=seed)))


def test_a_result_rule_on_quicklook_says_clouds_once(
    tmp_path: Path, receiver: Receiver, daemons: list[DaemonProcess]
) -> None:
    scope = alerting(
        tmp_path,
        [receiver.url()],
        results={"stars": {"below": 15}},
        results_frames=2,
    )
    scope.update(
        pipeline={"command": [sys.executable, "-m", "seestar_watch", "quicklook", "{path}"]}
    )
    daemon = started_daemon(scope, daemons, until="watcher.started")
    for n, stars in enumerate([30, 30, 4, 3, 3]):  # clouds come in
        synthetic(scope.share / "M 42_sub" / f"{n}.fit", stars, seed=n)
        daemon.wait_for_event("pipeline.finished", count=n + 1, timeout=60)
    wait_for(receiver.titles, timeout=10)
    time.sleep(1.5)  # every frame is done: a second message would have come by now
    assert receiver.titles() == ["stars below 15 for 2 frames in a row"]
    assert "in M 42_sub/3.fit (below 15 is your limit" in receiver.messages[0]["message"]


def test_a_receiver_that_hangs_or_refuses_delays_no_frame_and_shows_no_secret(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    hanging = Receiver("hang")
    refused = f"json://alerts:{SECRET}@127.0.0.1:{closed_port()}/hook"
    try:
        scope = alerting(tmp_path, [hanging.url(), refused], min_interval=0)
        scope.behave("fail")  # every frame is an alert to send
        daemon = started_daemon(scope, daemons, until="watcher.started")
        for n in range(4):
            written = time.monotonic()
            write_frame(scope.share / "M 42_sub" / f"{n}.fit")
            daemon.wait_for_event("frame.failed", count=n + 1, timeout=15)
            # debounce 0.3 s + the command: nowhere near the 10 s a send may wait
            assert time.monotonic() - written < 5.0
        assert hanging.messages == []
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 15  # a stuck send does not hold the stop
        assert SECRET not in daemon.text()
    finally:
        hanging.close()


def test_the_sender_retries_then_logs_a_failure_and_drops_the_oldest_when_full(
    logs: list[dict[str, Any]],
) -> None:
    refused = f"json://alerts:{SECRET}@127.0.0.1:{closed_port()}/hook"
    sender = AlertSender((refused,), timeout=1, retry_waits=(0.05, 0.05), queue_size=2)
    for n in range(4):  # not started yet: the queue fills
        sender.send(Alert("failed", f"alert {n}", "body"))
    sender.start()
    wait_for(lambda: len([e for e in logs if e["event"] == "alert.failed"]) == 2)
    failed = [e for e in logs if e["event"] == "alert.failed"]
    assert [e["title"] for e in failed] == ["alert 2", "alert 3"] and failed[0]["attempts"] == 3
    dropped = [e["title"] for e in logs if e["event"] == "alert.dropped"]
    assert dropped == ["alert 0", "alert 1"]
    sender.stop(5)
    assert SECRET not in json.dumps(logs)


def test_alert_test_says_per_url_whether_it_went(tmp_path: Path, receiver: Receiver) -> None:
    refused = f"json://alerts:{SECRET}@127.0.0.1:{closed_port()}/hook"
    scope = alerting(tmp_path, [receiver.url(), refused])
    result = scope.cli("alert-test")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines == ["sent  alerts.urls[0] (JSON)", "FAILED  alerts.urls[1] (JSON)"]
    assert SECRET not in result.stdout + result.stderr
    assert receiver.titles() == ["seestar-watch test message"]
    scope.update(alerts={"urls": [receiver.url()]})
    assert scope.cli("alert-test").returncode == 0
    scope.update(alerts={"urls": []})
    empty = scope.cli("alert-test")
    assert empty.returncode == 1 and "alerts.urls is empty" in empty.stderr


def test_check_config_refuses_unknown_urls_and_warns_of_a_readable_config(
    tmp_path: Path, receiver: Receiver
) -> None:
    scope = alerting(tmp_path, [receiver.url(), f"nosuch://user:{SECRET}@host/x"])
    bad = scope.cli("check-config")
    assert bad.returncode == 1
    assert "alerts.urls[1]: not a notification URL apprise knows (scheme 'nosuch';" in bad.stderr
    assert SECRET not in bad.stderr
    scope.update(alerts={"urls": [receiver.url()]})
    os.chmod(scope.config_path, 0o644)
    readable = scope.cli("check-config")
    assert readable.returncode == 0
    assert f"warning: {scope.config_path} holds alerts.urls" in readable.stdout
    assert f"chmod 600 {scope.config_path}" in readable.stdout
    os.chmod(scope.config_path, 0o600)
    quiet = scope.cli("check-config").stdout
    assert "warning" not in quiet
    assert "alerts: 1 URL; share lost after 300 s, failures gathered per 600 s" in quiet


@pytest.mark.smb
def test_the_share_lost_past_the_threshold_then_back_and_the_night_summary(
    samba: SambaShare, tmp_path: Path, receiver: Receiver, daemons: list[DaemonProcess]
) -> None:
    samba.restore()
    folder = samba.server / "MyWorks" / "alerts"
    folder.mkdir(exist_ok=True)
    scope = alerting(tmp_path, [receiver.url()], share_lost_after=2, night_over_after=4)
    scope.update(
        image_watcher={
            "watch_path": "smb://127.0.0.1/EMMC Images/MyWorks/alerts",
            "mount_retry": 0.5,
            "debounce_delay": 0.5,
            "smb_timeout": 2,
        },
        pipeline={"env": {**scope.settings["pipeline"]["env"], "RESULT": '{"stars": 41}'}},
    )
    try:
        daemon = started_daemon(scope, daemons, until="watcher.started")
        telescope_writes(folder / "M 42_sub", "a.fit")
        daemon.wait_for_event("pipeline.finished", timeout=20)
        samba.stop_server()  # dawn: the telescope is switched off
        daemon.wait_for_event("share.lost", timeout=20)
        wait_for(lambda: len(receiver.messages) >= 2, timeout=20)
        lost, summary = receiver.messages[:2]
        assert lost["title"].startswith("Seestar share lost for")
        assert summary["title"] == "Night summary: 1 frame done"
        assert "1 done, 0 failed, 0 rejected" in summary["message"]
        assert "stars 41" in summary["message"]
        telescope_writes(folder / "M 42_sub", "b.fit")  # written while unreachable
        samba.start_server()
        daemon.wait_for_event("share.restored", timeout=30)
        wait_for(lambda: len(receiver.messages) >= 3, timeout=20)
        back = receiver.messages[2]
        assert back["title"].startswith("Seestar share back after")
        assert "1 frame came in since it was lost" in back["message"]
    finally:
        samba.restore()
