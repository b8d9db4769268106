"""`check-mount` for smb://: every step of reaching the share, in order, with a fix for
each one that fails: the host resolves, the port answers, an SMB 2/3 dialect, the
login, the share (with the list of shares the server offers when the name is wrong),
the folder, a listing, and whether the server takes change notifications.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from seestar_watch.log import get_logger
from seestar_watch.sources.smb import SmbSource
from seestar_watch.sources.smbconnection import first_line
from seestar_watch.sources.smbshares import list_shares
from seestar_watch.sources.smburl import SmbUrl

log = get_logger("seestar_watch.sources.smb")
T = TypeVar("T")


Step = tuple[str, str, str, str | None]  # name, status, detail, fix


@dataclass
class Diagnosis:
    steps: list[Step] = field(default_factory=list)
    latency_ms: float | None = None
    frames: int | None = None
    targets: int | None = None
    observer: str | None = None
    on_step: Callable[[Step], None] = lambda step: None  # each step as soon as it is known

    def say(self, name: str, status: str, detail: str, fix: str | None = None) -> bool:
        self.steps.append((name, status, detail, fix))
        self.on_step((name, status, detail, fix))
        return status != "fail"


DIALECTS = {0x0202: "2.0.2", 0x0210: "2.1", 0x0300: "3.0", 0x0302: "3.0.2", 0x0311: "3.1.1"}


def diagnose(
    url: SmbUrl,
    timeout: float,
    *,
    ignore: tuple[str, ...],
    observer: str,
    on_step: Callable[[Step], None] = lambda step: None,
) -> Diagnosis:
    """Host, port, dialect, login, share, folder, listing, frames, notifications."""
    found = Diagnosis(on_step=on_step)
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(0.5, deadline - time.monotonic())

    if not (_resolves(found, url) and _answers(found, url, left())):
        return found
    if not _session_and_share(found, url, left()):
        return found
    source = SmbSource(url, recursive=True, ignore=ignore, timeout=left())
    try:
        if _lists(found, source):
            _hears(found, source, observer, min(1.0, left()))
    finally:
        source.client.reset()
    return found


def _resolves(found: Diagnosis, url: SmbUrl) -> bool:
    try:
        address = socket.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)[0][4][0]
    except (socket.gaierror, UnicodeError) as exc:
        mdns = url.host.endswith(".local")
        return found.say(
            "host",
            "fail",
            f"cannot resolve {url.host}: {getattr(exc, 'strerror', None) or exc}",
            "a .local name needs mDNS: on Linux `sudo apt install avahi-daemon libnss-mdns`;"
            " or use the scope's IP address (shown in the Seestar app)"
            if mdns
            else "check the host name, or use the scope's IP address",
        )
    return found.say("host", "ok", f"{url.host} is {address}")


def _answers(found: Diagnosis, url: SmbUrl, timeout: float) -> bool:
    started = time.monotonic()
    try:
        socket.create_connection((url.host, url.port), timeout=timeout).close()
    except OSError as exc:
        return found.say(
            "port",
            "fail",
            f"{url.host}:{url.port} does not answer: {exc.strerror or exc}",
            "is the Seestar on, awake, and in station mode on this Wi-Fi?",
        )
    took = (time.monotonic() - started) * 1000
    return found.say("port", "ok", f"{url.port} answers ({took:.1f} ms)")


def _session_and_share(found: Diagnosis, url: SmbUrl, timeout: float) -> bool:
    from smbprotocol.connection import Connection
    from smbprotocol.session import Session
    from smbprotocol.tree import TreeConnect

    connection = Connection(uuid.uuid4(), url.host, url.port, require_signing=False)
    try:
        try:
            connection.connect(timeout=max(1, round(timeout)))
        except Exception as exc:
            if "timeout" in str(exc).lower():  # a port that takes connections, then silence
                return found.say(
                    "dialect",
                    "fail",
                    f"{url.host}:{url.port} takes the connection but gives no answer within"
                    f" {max(1, round(timeout))} s",
                    "not an SMB server, or one that hangs: is this the Seestar's address,"
                    " and is it awake? (restart it if it keeps this up)",
                )
            return found.say(
                "dialect",
                "fail",
                f"no SMB 2 or 3 dialect agreed: {first_line(exc)}",
                "seestar-watch speaks SMB 2.0.2 to 3.1.1; a server that speaks only SMB 1"
                " must be mounted instead (mount -t cifs -o vers=1.0)",
            )
        dialect = DIALECTS.get(connection.dialect, hex(connection.dialect))
        found.say("dialect", "ok", f"SMB {dialect}")
        session = Session(
            connection,
            username=url.username,
            password=url.password,
            require_encryption=False,
            auth_protocol="ntlm",
        )
        try:
            session.connect()
        except Exception as exc:
            return found.say(
                "login",
                "fail",
                f"the server refused the {url.username!r} login: {first_line(exc)}",
                "the Seestar's share takes a guest login with no password: write the URL"
                " without user:password@",
            )
        found.say("login", "ok", f"{url.username!r} session accepted")
        try:
            TreeConnect(session, rf"\\{url.host}\{url.share}").connect(
                require_secure_negotiate=False
            )
        except Exception as exc:
            none: list[str] = []
            shares = _bounded(lambda: list_shares(session, url.host), min(3.0, timeout), none)
            offered = ", ".join(repr(s) for s in shares) if shares else "(none it would list)"
            fix = f"it offers: {offered}"
            if "EMMC Images" in shares:
                fix = f"use {_seestar_folder(url)} ({fix})"
            why = "" if "BadNetworkName" in type(exc).__name__ else f": {first_line(exc)}"
            return found.say(
                "share", "fail", f"no share named {url.share!r} on {url.host}{why}", fix
            )
        return found.say("share", "ok", f"{url.share!r}")
    finally:
        with contextlib.suppress(Exception):
            connection.disconnect(close=False)


def _lists(found: Diagnosis, source: SmbSource) -> bool:
    started = time.monotonic()
    try:
        source.tree.query("")
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return found.say(
                "folder",
                "fail",
                f"{source.location} does not exist: {exc.strerror}",
                "the Seestar keeps its frames in MyWorks/:"
                f" {_seestar_folder(source.url, share=source.url.share)}",
            )
        return found.say("answers", "fail", f"{source.location}: {exc.strerror}")
    found.latency_ms = round((time.monotonic() - started) * 1000, 1)
    found.say("folder", "ok", f"{source.location} is a folder")
    found.say("answers", "ok", f"listed in {found.latency_ms} ms")
    try:
        frames = [entry.relpath for entry in source.list_frames()]
    except OSError as exc:
        return found.say("readable", "fail", f"listing failed: {exc.strerror}")
    found.frames = len(frames)
    found.targets = len({relpath.rpartition("/")[0] for relpath in frames})
    plural = "" if found.frames == 1 else "s"
    folders = "folder" if found.targets == 1 else "folders"
    return found.say(
        "readable", "ok", f"{found.frames} FITS frame{plural} in {found.targets} {folders}"
    )


def _hears(found: Diagnosis, source: SmbSource, observer: str, wait: float) -> None:
    accepted, why = source.accepts_notifications(wait)
    if observer == "polling":
        found.observer = "polling"
        found.say("observer", "ok", f"polling: a listing every {source.poll_interval:g} s")
    elif accepted:
        found.observer = "notify"
        found.say(
            "observer",
            "ok",
            "auto uses the server's change notifications (a frame is heard within"
            " milliseconds), and listings for the truth",
        )
    else:
        found.observer = "polling"
        found.say(
            "observer",
            "warning",
            f"the server does not accept change notifications ({why}): auto lists the"
            f" folder every poll_interval instead",
            "nothing to do; frames are seen poll_interval + debounce_delay after they arrive",
        )


def _seestar_folder(url: SmbUrl, share: str = "EMMC Images") -> str:
    """The URL of the Seestar's MyWorks/ on this server, its port and user kept."""
    return str(replace(url, share=share, folder=("MyWorks",)))


def _bounded(function: Callable[[], T], timeout: float, otherwise: T) -> T:
    """`function()`, or `otherwise` when it does not answer within `timeout` seconds."""
    from seestar_watch.sources.bounded import ProbeTimeout, SingleFlight

    try:
        return SingleFlight("seestar-watch-smb-check").call(function, timeout)
    except ProbeTimeout:
        return otherwise
