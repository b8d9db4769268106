"""One connection to one SMB server, every call on it bounded by a timeout.

smbprotocol waits for an answer as long as the server keeps the connection open: a
scope that goes to sleep, or a server stopped with SIGSTOP, would hold the caller for
good. Here a call that outlives its deadline tears the connection down, which wakes
every call waiting on it; the next call connects afresh. Errors come out as OSErrors
whose message says what was refused (errors.SHARE_ERRNOS for an unreachable share).
"""

from __future__ import annotations

import errno
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import smbclient
from smbprotocol.exceptions import SMBAuthenticationError, SMBException, SMBOSError

from seestar_watch.log import get_logger
from seestar_watch.sources.smburl import SmbUrl

log = get_logger("seestar_watch.sources.smb")
T = TypeVar("T")

# A guest login with no password: smbprotocol has no anonymous session; these settings are
# the recipe that works against Samba guest shares such as the Seestar's "EMMC Images".
smbclient.ClientConfig(require_secure_negotiate=False, skip_dfs=True)


# NTSTATUS codes smbprotocol has no errno for, that some servers (impacket) answer where
# Samba answers STATUS_OBJECT_NAME_NOT_FOUND: a folder or file that is not there
NOT_FOUND = {0xC000000F: errno.ENOENT}  # STATUS_NO_SUCH_FILE


class SmbClient:
    """One connection to one server, every call bounded by `timeout` seconds."""

    def __init__(self, url: SmbUrl, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._cache: dict[str, Any] = {}  # smbclient's connection cache, ours alone
        self._lock = threading.Lock()
        self._deadlines = _Deadlines(self.reset)

    @property
    def options(self) -> dict[str, Any]:
        """The keyword arguments every smbclient call takes to use this connection."""
        return {"connection_cache": self._cache, "port": self.url.port}

    def unc(self, relpath: str = "") -> str:
        """\\\\host\\share\\folder\\relpath, as SMB names it."""
        parts = [self.url.share, *self.url.folder, *(p for p in relpath.split("/") if p)]
        return "\\\\" + self.url.host + "\\" + "\\".join(parts)

    def call(self, function: Callable[[], T]) -> T:
        """Run one SMB operation, connecting first if need be; OSErrors only, bounded."""
        with self._deadlines.bounded(self.timeout) as expired:
            try:
                self._connect()
                return function()
            except Exception as exc:
                raise self._failure(exc, expired()) from None

    def _failure(self, exc: Exception, expired: bool) -> OSError:
        """The OSError a failed call raises. A server's refusal (an NTSTATUS) leaves the
        connection as it is; a call cut off by its deadline is ETIMEDOUT. An answer that
        breaks the protocol is EPROTO: from our own parsers, read to its end (the
        connection is still good), or whatever smbprotocol raised on one (a struct.error,
        a name it could not decode...)."""
        if expired:  # the deadline closed the connection already
            return _timed_out(self.timeout)
        if isinstance(exc, SMBOSError):
            code = NOT_FOUND.get(exc.ntstatus, exc.errno)
            return OSError(code, _ntstatusfirst_line(exc), exc.filename)
        if isinstance(exc, OSError) and exc.errno == errno.EPROTO:
            return exc
        if isinstance(exc, UnicodeError):
            return _unreadable(self.url, exc)
        self.reset()
        if isinstance(exc, SMBException | OSError | ValueError):
            return unreachable(self.url, exc)
        return _unreadable(self.url, exc)

    def _connect(self) -> None:
        with self._lock:
            if self._cache:
                return
            smbclient.register_session(
                self.url.host,
                username=self.url.username,
                password=self.url.password,
                port=self.url.port,
                require_signing=False,
                auth_protocol="ntlm",
                connection_timeout=max(1, round(self.timeout)),
                connection_cache=self._cache,
            )

    @property
    def connected(self) -> bool:
        return bool(self._cache)

    def echo(self) -> None:
        """One SMB2 ECHO on the connection: is the server still answering? Bounded."""

        def echo() -> None:
            for connection in list(self._cache.values()):
                for session in list(connection.session_table.values()):
                    connection.echo(sid=session.session_id, timeout=max(1, round(self.timeout)))
                    return

        self.call(echo)

    def session(self) -> Any:
        """The logged-in session of this connection, or None before the first call."""
        for connection in list(self._cache.values()):
            for session in list(connection.session_table.values()):
                return session
        return None

    def reset(self) -> None:
        """Close the connection: every call waiting on it fails at once; the next reconnects."""
        with self._lock:
            connections = list(self._cache.values())
            self._cache.clear()
        for connection in connections:
            try:
                connection.disconnect(close=False)
            except Exception:  # already broken: nothing more to close
                log.debug("smb.disconnect_failed", host=self.url.host)


class _Deadlines:
    """One thread that calls `on_expire` when a bounded call outlives its deadline."""

    def __init__(self, on_expire: Callable[[], None]) -> None:
        self._on_expire = on_expire
        self._cond = threading.Condition()
        self._calls: dict[int, float] = {}
        self._expired: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def bounded(self, timeout: float) -> Iterator[Callable[[], bool]]:
        token = next(self._tokens)
        with self._cond:
            self._calls[token] = time.monotonic() + timeout
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="seestar-watch-smb-deadlines", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        try:
            yield lambda: token in self._expired
        finally:
            with self._cond:
                self._calls.pop(token, None)
                self._expired.discard(token)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._calls:
                    self._cond.wait()
                token, deadline = min(self._calls.items(), key=lambda item: item[1])
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                del self._calls[token]
                self._expired.add(token)
            self._on_expire()


def _unreadable(url: SmbUrl, exc: Exception) -> OSError:
    return OSError(
        errno.EPROTO,
        f"{url.host}: an answer that could not be read ({type(exc).__name__}: {first_line(exc)})",
    )


def _timed_out(timeout: float) -> OSError:
    return OSError(errno.ETIMEDOUT, f"the server did not answer within {timeout:g} s")


def _ntstatusfirst_line(exc: SMBOSError) -> str:
    return str(exc.strerror or exc).split(": ", 1)[-1]


def unreachable(url: SmbUrl, exc: BaseException) -> OSError:
    """A connection-level failure as an OSError whose message says what was refused."""
    exc = _root_cause(exc)
    if isinstance(exc, socket.gaierror):
        hint = " (a .local name needs mDNS: avahi on Linux; or use the scope's IP address)"
        return OSError(
            errno.EHOSTUNREACH,
            f"cannot resolve {url.host}{hint if url.host.endswith('.local') else ''}",
        )
    if isinstance(exc, SMBAuthenticationError) or "LogonFailure" in type(exc).__name__:
        return OSError(errno.ENOTCONN, f"the server refused the {url.username!r} login: {exc}")
    if "BadNetworkName" in type(exc).__name__:
        return OSError(
            errno.ENOENT,
            f"{url.host} has no share named {url.share!r} (`seestar-watch check-mount`"
            " lists the shares it offers)",
        )
    if isinstance(exc, ConnectionRefusedError):
        return OSError(errno.ENOTCONN, f"{url.host}:{url.port} refused the connection")
    if isinstance(exc, TimeoutError | socket.timeout):
        return OSError(errno.ETIMEDOUT, f"{url.host}:{url.port} did not answer")
    words = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return OSError(errno.ENOTCONN, f"{url.host}: {words}")


def _root_cause(exc: BaseException) -> BaseException:
    """The socket error under smbprotocol's "Failed to connect" wrapper, when there is one."""
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
        if isinstance(seen, OSError):
            return seen
    return exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
