"""The dashboard over real HTTP: a real ledger, the real server, the daemon and the command."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from seestar_watch.config import parse_listen
from seestar_watch.dashboard.overview import Overview, night_start
from seestar_watch.dashboard.server import Dashboard, DashboardError
from seestar_watch.history import History
from seestar_watch.ledger import Ledger
from seestar_watch.report import recorded_daemon_view
from seestar_watch.sources import Version
from seestar_watch.sources.local import LocalSource
from tests.conftest import wait_for, write_frame
from tests.harness import DaemonProcess, Scope, started_daemon

HOSTILE = "<img src=x onerror=alert(1)>.fit"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(
    port: int, path: str, method: str = "GET", host: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Host": host} if host else {}
        connection.request(method, path, headers=headers)
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def get_json(port: int, path: str) -> Any:
    status, _, body = get(port, path)
    assert status == 200, body
    return json.loads(body)


def fill(ledger: Ledger, frames: list[tuple[str, str, dict[str, Any] | None]]) -> None:
    """(name, final state, result) rows, as the daemon would leave them."""
    for n, (name, state, result) in enumerate(frames):
        header = {"OBJECT": "M 42", "DATE-OBS": f"2026-11-23T22:{n:02d}:00", "EXPTIME": 10.0}
        ledger.add_pending(Version(f"M 42_sub/{name}", 100, n), header)
        frame = ledger.claim_next()
        assert frame is not None
        code = 0 if state == "done" else 3
        reason = None if state == "done" else "exit code 3"
        ledger.finish(frame.id, state, exit_code=code, duration=1.5, reason=reason, result=result)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, Ledger, Path]]:
    """A dashboard on a real ledger, from a read-only connection as the daemon's is."""
    path = tmp_path / "state" / "ledger.sqlite3"
    writer = Ledger.open(path)
    source = LocalSource(str(tmp_path / "share"))
    with Ledger.reading(path) as reader:
        view = {"running": True, "share": "up", "observer": "native", "watch_path": "/share"}
        dashboard = Dashboard(Overview(reader, source, lambda: view), ("127.0.0.1", 0))
        dashboard.start()
        try:
            yield int(dashboard.url.rsplit(":", 1)[1].strip("/")), writer, path
        finally:
            dashboard.stop()
            writer.close()


def test_api_status_is_status_json_plus_the_share_and_the_failures(
    served: tuple[int, Ledger, Path],
) -> None:
    port, ledger, _ = served
    fill(ledger, [("a.fit", "done", {"stars": 41, "fwhm_arcsec": 3.2}), ("b.fit", "failed", None)])
    status = get_json(port, "/api/status")
    assert status["counts"]["done"] == 1 and status["counts"]["failed"] == 1
    assert status["pending"] == 0 and status["daemon"]["share"] == "up"
    assert status["daemon"]["observer"] == "native"
    newest, oldest = status["frames"]
    assert oldest["result"] == {"stars": 41, "fwhm_arcsec": 3.2} and oldest["OBJECT"] == "M 42"
    assert oldest["observed_at"] == "2026-11-23T22:00:00Z"
    assert status["last_frame"] == newest and newest["source"].endswith("M 42_sub/b.fit")
    (failure,) = status["failures"]
    assert failure["reason"] == "exit code 3" and failure["exit_code"] == 3
    assert status["night_start"] == night_start(History(ledger).last_change() or 0)
    assert status["archive"] == {"copies": 0, "bytes": 0}  # what the page says it holds


def test_api_frames_pages_through_a_night_with_its_cursor(
    served: tuple[int, Ledger, Path],
) -> None:
    port, ledger, _ = served
    fill(ledger, [(f"{n}.fit", "done", {"n": n}) for n in range(7)])
    seen, since, after = [], 0.0, 0
    while True:
        page = get_json(port, f"/api/frames?since={since!r}&after={after}&limit=3")
        seen += [frame["result"]["n"] for frame in page["frames"]]
        since, after = page["next"]["since"], page["next"]["after"]
        if not page["more"]:
            break
    assert seen == list(range(7))
    assert get_json(port, f"/api/frames?since={since!r}&after={after}")["frames"] == []
    assert len(get_json(port, "/api/frames?since=1h")["frames"]) == 7  # --since words too
    status, _, body = get(port, "/api/frames?since=yesterday")
    assert status == 400 and b"give a time ago" in body
    assert get(port, "/api/frames?after=-1")[0] == 400
    for huge in ("after=9223372036854775808", "limit=99999999999999999999", "after=%EF%BC%99"):
        status, _, body = get(port, f"/api/frames?{huge}")  # past SQLite's 64 bits; not ASCII
        assert status == 400 and b"below 2^63" in body


def test_metrics_in_the_prometheus_text_format(served: tuple[int, Ledger, Path]) -> None:
    port, ledger, _ = served
    fill(ledger, [("a.fit", "done", None), ("b.fit", "done", None), ("c.fit", "failed", None)])
    ledger.add_pending(Version("d.fit", 1, 1), {})
    status, headers, body = get(port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    scope = ("scope", "seestar")  # one telescope's page: its name, or the default
    assert samples["seestar_watch_frames", (scope, ("state", "done"))] == 2
    assert samples["seestar_watch_frames", (scope, ("state", "failed"))] == 1
    assert samples["seestar_watch_pending", (scope,)] == 1
    assert samples["seestar_watch_share_up", (scope,)] == 1
    assert samples["seestar_watch_pipeline_duration_seconds_count", (scope,)] == 3
    assert samples["seestar_watch_pipeline_duration_seconds_bucket", (("le", "1.0"), scope)] == 0
    assert samples["seestar_watch_pipeline_duration_seconds_bucket", (("le", "2.5"), scope)] == 3
    assert samples["seestar_watch_last_frame_timestamp_seconds", (scope,)] == pytest.approx(
        History(ledger).last_change()
    )


def test_read_only_nothing_but_get_and_head_and_the_ledger_is_untouched(
    served: tuple[int, Ledger, Path],
) -> None:
    port, ledger, path = served
    fill(ledger, [("a.fit", "failed", None)])
    ledger.close()

    def files() -> dict[str, str]:  # -shm is SQLite's shared index, where readers mark reads
        return {
            f.name: hashlib.sha256(f.read_bytes()).hexdigest()
            for f in path.parent.iterdir()
            if not f.name.endswith("-shm")
        }

    before = files()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for route in ("/api/status", "/api/frames", "/metrics", "/"):
            status, headers, _ = get(port, route, method)
            assert status == 405 and headers["Allow"] == "GET, HEAD"
    for route in ("/api/status", "/api/frames?since=0", "/metrics", "/"):
        assert get(port, route)[0] == 200
        status, _, body = get(port, route, "HEAD")
        assert status == 200 and body == b""
    assert files() == before


def test_only_its_own_files_and_a_policy_that_runs_only_its_own_script(
    served: tuple[int, Ledger, Path],
) -> None:
    port, _, _ = served
    for route in ("/static/../../etc/passwd", "/static/app.js/..", "/etc/passwd", "/index.html"):
        assert get(port, route)[0] == 404, route
    status, headers, body = get(port, "/")
    assert status == 200 and b'src="static/app.js"' in body
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
    assert b"innerHTML" not in get(port, "/static/app.js")[2]  # names only ever go in as text
    assert b"http" not in body.replace(b'charset="utf-8"', b"")  # nothing from the internet


def test_bound_to_localhost_it_answers_only_local_names(served: tuple[int, Ledger, Path]) -> None:
    port, _, _ = served
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]:8765", "localhost"):
        assert get(port, "/api/status", host=host)[0] == 200, host
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
        assert get(port, "/api/status", host=host)[0] == 403, host  # DNS rebinding


def test_a_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "ledger.sqlite3"
        Ledger.open(path).close()
        with Ledger.reading(path) as reader:
            overview = Overview(reader, LocalSource(str(tmp_path)), dict)
            with pytest.raises(DashboardError, match=f"127.0.0.1:{port}: Address already in use"):
                Dashboard(overview, ("127.0.0.1", port)).start()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8765", ("127.0.0.1", 8765)),
        ("[::1]:80", ("::1", 80)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8765", "host:", ":8765", "host:99999", "host:http"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_listen(text)


# -- the daemon and `seestar-watch dashboard` ----------------------------------------------


@pytest.fixture
def scope(tmp_path: Path) -> Scope:
    scope = Scope(tmp_path)
    scope.update(pipeline={"env": {**scope.settings["pipeline"]["env"], "RESULT": '{"stars": 9}'}})
    return scope


@pytest.mark.slow
def test_the_running_daemon_serves_the_page_and_the_share_state(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    port = free_port()
    scope.update(dashboard={"listen": f"127.0.0.1:{port}"})
    daemon = started_daemon(scope, daemons, until="watcher.started")
    # the page starts beside the threads: it may be said after the watcher
    (started,) = daemon.wait_for_event("dashboard.started")
    assert started["url"] == f"http://127.0.0.1:{port}/" and started["local_only"] is True
    write_frame(scope.share / "M 42_sub" / HOSTILE)

    def done() -> Any:
        status = get_json(port, "/api/status")
        return status if status["counts"]["done"] == 1 else None

    status = wait_for(done, timeout=20)
    assert status["daemon"]["running"] is True and status["daemon"]["share"] == "up"
    assert status["daemon"]["observer"] == "native" and status["daemon"]["served_by"] == "daemon"
    assert status["frames"][0]["source"].endswith(HOSTILE)
    assert status["frames"][0]["result"] == {"stars": 9}
    assert get(port, "/metrics")[0] == 200

    # the same page from the ledger alone, beside the daemon: it says the daemon runs
    other = free_port()
    alone = subprocess.Popen(
        [sys.executable, "-m", "seestar_watch", "dashboard", "-c", str(scope.config_path),
         "--listen", f"127.0.0.1:{other}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert alone.stdout is not None
        assert alone.stdout.readline().startswith(f"dashboard at http://127.0.0.1:{other}/")

        def daemon_seen() -> Any:  # the daemon leaves its view beside the ledger (1 s steps)
            seen = get_json(other, "/api/status")
            return seen if seen["daemon"].get("observer") == "native" else None

        seen = wait_for(daemon_seen)
        assert seen["counts"]["done"] == 1 and seen["daemon"]["running"] is True
        assert seen["daemon"]["share"] == "up" and seen["daemon"]["served_by"] == "ledger"
        daemon.stop()
        after = get_json(other, "/api/status")  # the morning after: still served
        assert after["daemon"]["running"] is False and after["counts"]["done"] == 1
        with pytest.raises(ConnectionRefusedError):
            get(port, "/api/status")  # the daemon's own page went with it
    finally:
        alone.terminate()
        alone.communicate(timeout=10)  # and its pipes closed
        assert alone.returncode == 0


@pytest.mark.slow
def test_a_port_in_use_run_goes_on_and_dashboard_exits_1(
    scope: Scope, daemons: list[DaemonProcess]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        scope.update(dashboard={"listen": f"127.0.0.1:{port}"})
        daemon = started_daemon(scope, daemons, until="watcher.started")
        (unavailable,) = daemon.wait_for_event("dashboard.unavailable")  # said after the watcher
        assert "Address already in use" in unavailable["reason"]
        assert "set dashboard.listen to another port" in unavailable["reason"]
        write_frame(scope.share / "M 42_sub" / "a.fit")
        daemon.wait_for_event("pipeline.finished")  # frames matter more than the page
        result = scope.cli("dashboard", timeout=30)
        assert result.returncode == 1
        assert result.stderr == (
            f"error: cannot serve the dashboard on 127.0.0.1:{port}: Address already in use"
            " (another seestar-watch, or another program, uses it): set dashboard.listen to"
            " another port, or off\n"
        )


def test_dashboard_without_a_ledger_or_with_a_bad_listen_is_one_line(scope: Scope) -> None:
    result = scope.cli("dashboard")
    assert result.returncode == 1 and result.stderr.startswith("error: no ledger at")
    bad = scope.cli("dashboard", "--listen", "everywhere")
    assert bad.returncode == 2 and "expected HOST:PORT" in bad.stderr
    scope.update(dashboard={"listen": "lan"})
    config = scope.cli("check-config")
    assert config.returncode == 1 and "dashboard.listen: expected HOST:PORT" in config.stderr


def test_check_config_says_where_the_page_is(scope: Scope) -> None:
    for off in (False, "off", "OFF", None):
        scope.update(dashboard={"listen": off})
        assert "dashboard: off" in scope.cli("check-config").stdout, off
    scope.update(dashboard={"listen": "0.0.0.0:8765"})
    assert "dashboard: http://0.0.0.0:8765/" in scope.cli("check-config").stdout
    del scope.settings["dashboard"]
    scope.update()
    assert "dashboard: http://127.0.0.1:8765/" in scope.cli("check-config").stdout  # the default


def test_a_stopped_daemons_view_says_it_is_not_running(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    assert recorded_daemon_view(ledger) == {"running": False, "served_by": "ledger"}
    view = {"pid": 1, "pid_started": 0.0, "share": "up", "observer": "native"}
    (tmp_path / "ledger.sqlite3.daemon.json").write_text(json.dumps(view))
    seen = recorded_daemon_view(ledger)  # pid 1 runs, but did not start at 0: not it
    assert seen["running"] is False and seen["share"] == "unknown"


def test_connections_that_send_nothing_cost_at_most_a_bounded_number_of_threads(
    served: tuple[int, Ledger, Path],
) -> None:
    import threading

    from seestar_watch.dashboard.server import CONNECTIONS

    port, _, _ = served
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS + 20)]
    try:
        wait_for(lambda: threading.active_count() >= before + CONNECTIONS)
        assert threading.active_count() <= before + CONNECTIONS
    finally:
        for connection in idle:
            connection.close()
    wait_for(lambda: threading.active_count() <= before + 1)
    assert get(port, "/api/status")[0] == 200  # and it serves again once they are gone


def test_slow_clients_cannot_hold_every_slot(
    served: tuple[int, Ledger, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that sends a header line every few seconds keeps each read within its
    timeout: without a deadline for the whole headers, 32 of them take every slot."""
    import threading

    from seestar_watch.dashboard import server

    monkeypatch.setattr(server, "HEADER_DEADLINE", 1.5)
    port, _, _ = served
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(server.CONNECTIONS)]
    stop = threading.Event()

    def drip() -> None:
        for sock in slow:
            sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n")
        while not stop.wait(0.3):
            for sock in slow:
                with contextlib.suppress(OSError):  # closed on us: what should happen
                    sock.sendall(b"X-Slow: 1\r\n")

    dripping = threading.Thread(target=drip, daemon=True)
    dripping.start()
    try:
        time.sleep(0.5)  # every slot taken by a slow client
        answers = [get(port, "/api/status")[0] for _ in range(20)]
        assert answers == [200] * 20
        for sock in slow:  # and each slow client is cut off at its deadline
            sock.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
    finally:
        stop.set()
        dripping.join(5)
        for sock in slow:
            sock.close()
