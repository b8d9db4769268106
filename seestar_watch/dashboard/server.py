"""The dashboard's HTTP server: the page, its JSON and /metrics, read-only, stdlib only.

GET and HEAD only, a fixed set of paths (no file is looked up by a name from the
request), answers that are never cached, and a Content-Security-Policy that lets
the page run its own script and nothing else: frame names, header and result values
are untrusted, and the page shows them as text. Bound to localhost, it also refuses
a Host header that is not a local name, so a web page elsewhere cannot read it
through DNS rebinding.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from seestar_watch.config import Config, Listen, url_host
from seestar_watch.dashboard.metrics import CONTENT_TYPE, LedgerCollector, Scoped, metrics_text
from seestar_watch.dashboard.overview import Overview
from seestar_watch.errors import UserError
from seestar_watch.log import get_logger
from seestar_watch.report import parse_since, recorded_daemon_view

log = get_logger("seestar_watch.dashboard")

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/fleet": ("fleet.html", "text/html; charset=utf-8"),
    "/static/fleet.js": ("fleet.js", "text/javascript; charset=utf-8"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/poll.js": ("poll.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    # frames: only the fleet's page, which shows each telescope's own page side by side
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
    " connect-src 'self'; img-src 'self'; frame-src 'self'; base-uri 'none';"
    " form-action 'none'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
REQUEST_TIMEOUT = 10.0  # seconds one read or write may wait on the client
HEADER_DEADLINE = 10.0  # seconds a request's headers must be complete within, in all
REQUEST_DEADLINE = 60.0  # seconds a whole request may take, its answer included
CONNECTIONS = 32  # requests served at once
EVICT_WAIT = 1.0  # seconds a new request waits for the slot of the one it closes


class DashboardError(UserError):
    pass


class Dashboard:
    """Serves one telescope's `overview`, or several side by side, on `listen` from a thread
    of its own until stop(). Each telescope's page is at /scope/NAME/ (with one, also at /);
    with several, / is the fleet's page; /metrics has them all, by their `scope` label."""

    def __init__(self, overviews: Overview | Sequence[Overview], listen: Listen) -> None:
        listed = [overviews] if isinstance(overviews, Overview) else list(overviews)
        self.scopes = {overview.name: overview for overview in listed}
        if len(self.scopes) != len(listed):
            raise DashboardError(
                "two telescopes of the fleet have the same name: give each a `scope:`"
            )
        self.metrics = LedgerCollector(
            [Scoped(o.name, o.ledger, o.daemon_view) for o in self.scopes.values()]
        )
        self.listen = listen
        self._pages = {path: _static(name) for path, (name, _) in STATIC.items()}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def overview(self) -> Overview:
        """The first (with one telescope, the only) telescope's."""
        return next(iter(self.scopes.values()))

    @property
    def url(self) -> str:
        host, port = self.listen
        if self._server is not None:
            port = self._server.server_address[1]
        return f"http://{url_host(host)}:{port}/"

    def start(self) -> None:
        """Bind and serve on a thread; DashboardError (one line) when the address is taken."""
        host, port = self.listen
        handler = type("Handler", (_Handler,), {"dashboard": self})
        server_class = _IPv6Server if ":" in host else _Server
        try:
            self._server = server_class((host, port), handler)
        except OSError as exc:
            why = exc.strerror or str(exc)
            hint = (
                " (another seestar-watch, or another program, uses it):"
                " set dashboard.listen to another port, or off"
                if "in use" in why
                else ": set dashboard.listen to an address of this machine, or off"
            )
            raise DashboardError(
                f"cannot serve the dashboard on {url_host(host)}:{port}: {why}{hint}"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="seestar-watch-dashboard", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def local_only(self) -> bool:
        return is_local(self.listen[0])


def is_local(name: str) -> bool:
    """localhost, or a loopback address (127.0.0.0/8, ::1) written as one."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    """At most CONNECTIONS requests at once, each with a deadline for its headers and one
    for the whole request: a client on the LAN that sends a header line every few seconds
    (each read is within its timeout) or opens connections without end cannot keep the
    page from anyone. When every slot is taken, a new request closes the one that has
    waited longest for its headers and takes its slot."""

    daemon_threads = True

    def __init__(self, *args: Any) -> None:
        self._slots = threading.BoundedSemaphore(CONNECTIONS)
        self._live: dict[Any, tuple[float, bool]] = {}  # socket -> (accepted at, headers in)
        self._live_lock = threading.Lock()
        self._closed = threading.Event()
        super().__init__(*args)  # binds: a port in use raises here, with nothing started
        self._reaper = threading.Thread(
            target=self._reap, name="seestar-watch-dashboard-reaper", daemon=True
        )
        self._reaper.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False) and not self._evict_for(request):
            self.shutdown_request(request)
            return
        with self._live_lock:
            self._live[request] = (time.monotonic(), False)
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._live_lock:
                self._live.pop(request, None)
            self._slots.release()

    def headers_in(self, request: Any) -> None:
        """The request's headers are complete: only the whole-request deadline is left."""
        with self._live_lock:
            if request in self._live:
                self._live[request] = (self._live[request][0], True)

    def _evict_for(self, request: Any) -> bool:
        """Close the connection waiting longest for its headers; True once its slot is
        this request's."""
        with self._live_lock:
            waiting = [(since, sock) for sock, (since, done) in self._live.items() if not done]
        if not waiting:
            return False
        _cut(min(waiting, key=lambda item: item[0])[1])
        return self._slots.acquire(timeout=EVICT_WAIT)

    def _reap(self) -> None:
        """Close what outlived its deadline, twice a second."""
        while not self._closed.wait(0.5):
            now = time.monotonic()
            with self._live_lock:
                late = [
                    sock
                    for sock, (since, done) in self._live.items()
                    if now - since > (REQUEST_DEADLINE if done else HEADER_DEADLINE)
                ]
            for sock in late:
                _cut(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that went away mid-answer (a closed tab, a cut connection): not news
        log.debug("dashboard.request_failed", exc_info=True)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()


def _cut(sock: Any) -> None:
    """End a connection from another thread: its handler's read or write fails at once."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


def _static(name: str) -> bytes:
    return resources.files("seestar_watch.dashboard").joinpath("static", name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server: _Server
    timeout = REQUEST_TIMEOUT

    def version_string(self) -> str:
        return "seestar-watch"

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self.server.headers_in(self.request)
        return parsed

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _not_allowed(self) -> None:
        body = b"read-only: GET and HEAD only\n"
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, body, _TEXT, extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _answer(self, *, with_body: bool) -> None:
        if not self._host_allowed():
            self._send(HTTPStatus.FORBIDDEN, b"not a local name\n", "text/plain", with_body)
            return
        url = urlsplit(self.path)
        try:
            status, body, kind = self._route(url.path, parse_qs(url.query))
        except ValueError as exc:
            status, body, kind = HTTPStatus.BAD_REQUEST, _json({"error": str(exc)}), _JSON
        except Exception:  # a bug or an unreadable ledger: a 500, and the server goes on
            log.exception("dashboard.failed", path=url.path)
            status, body, kind = HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n", _TEXT
        self._send(status, body, kind, with_body)

    def _route(self, path: str, query: dict[str, list[str]]) -> tuple[HTTPStatus, bytes, str]:
        board = self.dashboard
        if path == "/metrics":
            return HTTPStatus.OK, metrics_text(board.metrics), CONTENT_TYPE
        if path == "/api/fleet":
            return HTTPStatus.OK, _json({"scopes": list(board.scopes)}), _JSON
        overview: Overview | None = board.overview
        if path.startswith("/scope/"):  # one telescope's page and API, by its name
            name, slash, rest = path[len("/scope/") :].partition("/")
            overview, path = board.scopes.get(name) if slash else None, "/" + rest
        elif path == "/" and len(board.scopes) > 1:
            path = "/fleet"
        if overview is None:
            return HTTPStatus.NOT_FOUND, b"no such scope\n", _TEXT
        if path in STATIC:
            return HTTPStatus.OK, board._pages[path], STATIC[path][1]
        return self._api(overview, path, query)

    def _api(
        self, overview: Overview, path: str, query: dict[str, list[str]]
    ) -> tuple[HTTPStatus, bytes, str]:
        if path == "/api/status":
            return HTTPStatus.OK, _json(overview.status()), _JSON
        if path == "/api/frames":
            since = _since(query.get("since", ["0"])[-1])
            after = _whole(query.get("after", ["0"])[-1], "after")
            limit = _whole(query.get("limit", ["2000"])[-1], "limit")
            return HTTPStatus.OK, _json(overview.frames(since, after, limit)), _JSON
        return HTTPStatus.NOT_FOUND, b"not found\n", _TEXT

    def _host_allowed(self) -> bool:
        if not self.dashboard.local_only:
            return True  # opened to the network on purpose: any name may reach it
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            name = host[1:].partition("]")[0]
        else:
            name = host.rpartition(":")[0] if ":" in host else host
        return is_local(name)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        kind: str,
        with_body: bool = True,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("dashboard.request", request=format % args)  # escaped by the log renderer


_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True, allow_nan=False).encode()


def _since(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return parse_since(text)  # ValueError (a 400) when it is neither


def _whole(text: str, name: str) -> int:
    """A whole number that SQLite can take (it holds 64 bits); ValueError (a 400)."""
    if not (text.isascii() and text.isdigit()) or int(text) > 2**63 - 1:
        raise ValueError(f"{name}: expected a whole number below 2^63, got {text[:40]!r}")
    return int(text)


def serve_ledgers(configs: list[Config], listen: Listen, say: Callable[[str], None]) -> None:
    """`seestar-watch dashboard`: the same page from the ledgers alone, opened read-only,
    while the daemons run or after them; one telescope's, or several side by side; until
    SIGTERM or Ctrl-C."""
    from seestar_watch.ledger import Ledger
    from seestar_watch.lifecycle import Lifecycle
    from seestar_watch.sources import open_source

    for config in configs:
        if not config.state.ledger.exists():
            raise DashboardError(
                f"no ledger at {config.state.ledger} yet: `seestar-watch run -c {config.source}`"
                " makes it"
            )
    lifecycle = Lifecycle(0)
    with contextlib.ExitStack() as opened, lifecycle.handling_signals():
        overviews = []
        for config in configs:
            path = config.state.ledger
            ledger = opened.enter_context(Ledger.reading(path))
            overviews.append(
                Overview(
                    ledger,
                    open_source(config.image_watcher),
                    lambda path=path: recorded_daemon_view(path),  # type: ignore[misc]
                    config.photometry.targets,
                    config.scope_name,
                )
            )
        dashboard = Dashboard(overviews, listen)
        dashboard.start()
        where = ", ".join(str(config.state.ledger) for config in configs)
        say(f"dashboard at {dashboard.url} (read-only, from {where}); Ctrl-C stops it")
        if not dashboard.local_only:
            say("note: open to the network: anyone who can reach this port can see the night")
        while not lifecycle.wait(1.0):
            pass
        dashboard.stop()
