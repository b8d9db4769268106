"""What a guest, or a hostile server, can do to smb://, against real servers: Samba (what the
Seestar runs) with names and links a guest can leave on its disk, and impacket's SMB2 server
bent to send what no well-behaved server sends (tests/hostile_smb_server.py).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import struct
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from seestar_watch.sources.smbwire import parse_changes, parse_entries
from tests.conftest import frame_bytes, real_header, wait_for, write_frame
from tests.harness import DaemonProcess, Scope, started_daemon
from tests.smbshare import HostileServer, SambaShare, impacket_missing, telescope_writes
from tests.test_hostile import YEAR_2300, reasons, sparse_frame
from tests.test_smb_source import server, smb, start, url_of

__all__ = ["smb"]  # the Samba-backed Scope fixture, shared with test_smb_source.py

needs_impacket = pytest.mark.skipif(impacket_missing() is not None, reason=str(impacket_missing()))


# -- the parsers: thousands of random and mutated answers ---------------------------------


def listing_buffer(names: list[str]) -> bytes:
    """A well-formed FILE_ID_FULL_DIR_INFORMATION buffer, as Samba sends one."""
    entry = struct.Struct("<II8x8xq8xq8xIII4xQ")
    out = b""
    for n, name in enumerate(names):
        encoded = name.encode("utf-16-le")
        size = entry.size + len(encoded)
        size += -size % 8
        following = 0 if n == len(names) - 1 else size
        body = entry.pack(
            following, n, 133_000_000_000_000_000, 4_152_960, 0x20, len(encoded), 0, n
        )
        out += (body + encoded).ljust(size if following else len(body + encoded), b"\0")
    return out


def changes_buffer(names: list[str]) -> bytes:
    out = b""
    for n, name in enumerate(names):
        encoded = name.encode("utf-16-le")
        size = 12 + len(encoded)
        size += -size % 4
        following = 0 if n == len(names) - 1 else size
        out += (struct.pack("<III", following, 1, len(encoded)) + encoded).ljust(
            size if following else 12 + len(encoded), b"\0"
        )
    return out


def mutated(rng: random.Random, good: bytes) -> bytes:
    data = bytearray(good)
    for _ in range(rng.randint(1, 6)):
        kind = rng.random()
        if kind < 0.4 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind < 0.6 and data:
            at = rng.randrange(len(data))
            data[at : at + 4] = struct.pack("<I", rng.choice([0, 1, 4, 79, 80, 2**31, 2**32 - 1]))
        elif kind < 0.8:
            del data[rng.randrange(len(data) + 1) :]
        else:
            data += bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    return bytes(data)


@pytest.mark.parametrize(("parse", "good"), [
    (lambda b: list(parse_entries(b)), listing_buffer(["M 42_sub", "a.fit", "Light_b.fit"])),
    (parse_changes, changes_buffer(["Light_M 42_1.fit", "x.tmp"])),
])  # fmt: skip
def test_a_malformed_answer_is_eproto_and_never_another_error_or_a_hang(
    parse: Any, good: bytes
) -> None:
    assert len(parse(good)) in (2, 3)  # the well-formed answer parses
    rng = random.Random(20261201)
    started, outcomes = time.monotonic(), {"parsed": 0, "EPROTO": 0}
    for n in range(6000):
        data = mutated(rng, good) if n % 2 else bytes(rng.randrange(256) for _ in range(n % 300))
        try:
            parse(data)
            outcomes["parsed"] += 1
        except OSError as exc:
            assert exc.errno == 71, exc  # EPROTO, and only that
            outcomes["EPROTO"] += 1
    assert time.monotonic() - started < 20  # never a loop over a hostile offset
    assert outcomes["parsed"] and outcomes["EPROTO"] > 1000


def test_a_lone_surrogate_is_kept_for_the_caller_to_refuse() -> None:
    raw = listing_buffer(["ok.fit", "x"]).replace("x".encode("utf-16-le"), b"\x00\xd8")
    names = [entry.name for entry in parse_entries(raw)]
    assert names == ["ok.fit", "\ud800"]


# -- impacket: malformed answers, empty names, backslashes, no notifications -------------


@pytest.fixture
def share_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "server"
    (folder / "MyWorks").mkdir(parents=True)
    return folder


def hostile_scope(tmp_path: Path, hostile: HostileServer, **watcher: Any) -> Scope:
    return Scope(
        tmp_path,
        image_watcher={
            "watch_path": f"{hostile.url}/MyWorks",
            "observer": "auto",
            "mount_retry": 0.5,
            "rescan_interval": 1,
            "poll_interval": 0.5,
            "debounce_delay": 0.3,
            "smb_timeout": 3,
            **watcher,
        },
    )


@needs_impacket
@pytest.mark.slow
def test_malformed_listings_are_failed_scans_and_the_night_goes_on(
    tmp_path: Path, share_folder: Path, daemons: list[DaemonProcess]
) -> None:
    with HostileServer(share_folder, "truncated:4") as hostile:
        scope = hostile_scope(tmp_path, hostile)
        daemon = started_daemon(scope, daemons, until="daemon.started")
        daemon.wait_for_event("watcher.started", timeout=30)
        good = write_frame(share_folder / "MyWorks" / "M 42_sub" / "good.fit")
        wait_for(lambda: len(scope.runs()) == 1, timeout=30)
        assert daemon.stop() == 0
    said = json.dumps(daemon.logs())
    assert "a malformed answer from the server" in said
    assert scope.run_sources() == [f"{hostile.url}/MyWorks/M 42_sub/{good.name}"]
    assert not daemon.events("daemon.thread_failed") and "struct.error" not in said


@needs_impacket
def test_a_listing_that_never_ends_is_cut_off(
    share_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seestar_watch.config import parse_smb_url
    from seestar_watch.sources import smb as smb_source
    from seestar_watch.sources import smbtree

    monkeypatch.setattr(smbtree, "MAX_ENTRIES", 300)  # 100,000 in use: seconds here
    for n in range(3):
        write_frame(share_folder / "MyWorks" / f"f{n}.fit")
    with HostileServer(share_folder, "endless") as hostile:
        source = smb_source.SmbSource(parse_smb_url(f"{hostile.url}/MyWorks"), timeout=30)
        with pytest.raises(OSError, match="more than 300 entries in one folder") as caught:
            list(source.list_frames())
    assert caught.value.errno == 71  # EPROTO: the server's fault, not a lost share


@needs_impacket
@pytest.mark.slow
def test_a_folder_with_an_empty_name_is_skipped_and_stop_is_prompt(
    tmp_path: Path, share_folder: Path, daemons: list[DaemonProcess]
) -> None:
    write_frame(share_folder / "MyWorks" / "M 42_sub" / "old.fit")
    with HostileServer(share_folder, "empty-name") as hostile:
        scope = hostile_scope(tmp_path, hostile)
        check = scope.cli("check-mount", "--json", "--timeout", "10")
        assert check.returncode == 0, check.stdout
        assert json.loads(check.stdout)["frames"] == 1
        daemon = started_daemon(scope, daemons, until="watcher.started")
        good = write_frame(share_folder / "MyWorks" / "M 42_sub" / "good.fit")
        wait_for(lambda: len(scope.runs()) == 1, timeout=20)
        stopping = time.monotonic()
        assert daemon.stop(signal.SIGTERM) == 0
        assert time.monotonic() - stopping < 10
    assert scope.run_sources() == [f"{hostile.url}/MyWorks/M 42_sub/{good.name}"]
    assert daemon.events("smb.name_refused")


@needs_impacket
@pytest.mark.slow
def test_a_name_with_backslashes_never_reads_outside_the_watched_folder(
    tmp_path: Path, share_folder: Path, daemons: list[DaemonProcess]
) -> None:
    write_frame(share_folder / "evil.fit", frame_bytes(real_header()))  # outside MyWorks
    with HostileServer(share_folder) as hostile:
        scope = hostile_scope(tmp_path, hostile)
        daemon = started_daemon(scope, daemons, until="watcher.started")
        # impacket sends this name as it is on its disk: joined with "\" it leaves MyWorks
        write_frame(share_folder / "MyWorks" / "M 42_sub" / "..\\..\\evil.fit")
        good = write_frame(share_folder / "MyWorks" / "M 42_sub" / "good.fit")
        wait_for(lambda: len(scope.runs()) == 1, timeout=20)
        daemon.wait_for_next("scan.finished")
        assert daemon.stop() == 0
    assert scope.run_sources() == [f"{hostile.url}/MyWorks/M 42_sub/{good.name}"]
    (refused,) = daemon.events("smb.name_refused")
    assert "separator" in refused["reason"]


@needs_impacket
@pytest.mark.slow
def test_a_server_that_refuses_notifications_is_said_to_be_listed(
    tmp_path: Path, share_folder: Path, daemons: list[DaemonProcess]
) -> None:
    with HostileServer(share_folder) as hostile:
        scope = hostile_scope(tmp_path, hostile)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        scope.update(dashboard={"listen": f"127.0.0.1:{port}"})
        daemon = started_daemon(scope, daemons, until="watcher.started")
        (started,) = daemon.events("watcher.started")
        assert started["observer"] == "polling" and "refuses" in started["reason"]
        write_frame(share_folder / "MyWorks" / "M 42_sub" / "a.fit")
        wait_for(lambda: len(scope.runs()) == 1, timeout=20)
        daemon.wait_for_event("dashboard.started")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as answer:
            assert json.load(answer)["daemon"]["observer"] == "polling"
        assert daemon.stop() == 0


@needs_impacket
@pytest.mark.slow
def test_times_and_sizes_out_of_range_from_a_server_are_rejected(
    tmp_path: Path, share_folder: Path, daemons: list[DaemonProcess]
) -> None:
    with HostileServer(share_folder) as hostile:
        scope = hostile_scope(tmp_path, hostile)
        daemon = started_daemon(scope, daemons, until="watcher.started")
        future = write_frame(share_folder / "MyWorks" / "M 42_sub" / "future.fit")
        os.utime(future, (YEAR_2300, YEAR_2300))
        sparse_frame(share_folder / "MyWorks" / "M 42_sub" / "huge.fit")
        wait_for(lambda: len(reasons(scope, "rejected")) == 2, timeout=30)
        good = write_frame(share_folder / "MyWorks" / "M 42_sub" / "good.fit")
        wait_for(lambda: len(scope.runs()) == 1, timeout=20)
        assert daemon.stop() == 0
    rejected = reasons(scope, "rejected")
    assert "2300" in rejected["future.fit"] and "max_frame_mb" in rejected["huge.fit"]
    assert scope.run_sources() == [f"{hostile.url}/MyWorks/M 42_sub/{good.name}"]


@needs_impacket
@pytest.mark.slow
def test_check_mount_through_a_slow_server_keeps_the_steps_that_passed(
    tmp_path: Path, share_folder: Path
) -> None:
    with HostileServer(share_folder, "slow:1.5") as hostile:
        scope = hostile_scope(tmp_path, hostile)
        started = time.monotonic()
        check = scope.cli("check-mount", "--timeout", "4")
        assert time.monotonic() - started < 15
    assert check.returncode == 1
    lines = check.stdout.splitlines()
    assert any(line.startswith("ok      host") for line in lines), check.stdout
    assert any(line.startswith("ok      port") for line in lines), check.stdout
    assert "no further answer within 4 s" in check.stdout


@pytest.mark.slow
def test_check_mount_says_a_tarpit_does_not_answer_not_that_it_speaks_smb1(
    tmp_path: Path,
) -> None:
    tarpit = socket.socket()
    tarpit.bind(("127.0.0.1", 0))
    tarpit.listen()
    held: list[Any] = []
    threading.Thread(target=lambda: held.append(tarpit.accept()), daemon=True).start()
    port = tarpit.getsockname()[1]
    scope = Scope(
        tmp_path, image_watcher={"watch_path": f"smb://127.0.0.1:{port}/EMMC Images/MyWorks"}
    )
    try:
        check = scope.cli("check-mount", "--timeout", "3")
    finally:
        for connection, _ in held:
            connection.close()
        tarpit.close()
    assert check.returncode == 1
    assert "takes the connection but gives no answer within" in check.stdout
    assert "SMB 1" not in check.stdout


# -- Samba: what a guest can leave on the telescope's disk --------------------------------


@pytest.mark.smb
@pytest.mark.slow
def test_one_undecodable_name_stops_neither_listings_nor_notifications(
    smb: Scope, daemons: list[DaemonProcess]
) -> None:
    sub = server(smb) / "M 42_sub"
    sub.mkdir()
    # U+D800 stored as CESU-8: Samba sends it as a lone UTF-16 surrogate
    with open(os.fsencode(sub) + b"/bad\xed\xa0\x80.fit", "wb") as bad:
        bad.write(frame_bytes())
    daemon = start(smb, daemons)
    assert daemon.events("watcher.started")[0]["observer"] == "notify"
    good = telescope_writes(sub, "Light_good.fit", chunks=2, pause=0.1)
    written = time.monotonic()
    wait_for(lambda: len(smb.runs()) == 1, timeout=15)
    assert time.monotonic() - written < 8  # heard, not found by a listing 60 s later
    assert daemon.stop() == 0
    assert smb.run_sources() == [url_of(smb, good)]
    (refused,) = daemon.events("smb.name_refused")
    assert "surrogate" in refused["reason"]


@pytest.mark.smb
@pytest.mark.slow
def test_a_folder_that_links_to_itself_is_listed_once(
    smb: Scope, daemons: list[DaemonProcess]
) -> None:
    old = telescope_writes(server(smb) / "M 42_sub", "old.fit", chunks=1, pause=0)
    (server(smb) / "loop").symlink_to(".")  # Samba follows it: a plain folder to a client
    check = smb.cli("check-mount", "--json", timeout=60)
    assert check.returncode == 0, check.stdout
    assert json.loads(check.stdout)["frames"] == 1
    smb.update(state={"process_existing": True})
    daemon = start(smb, daemons)
    new = telescope_writes(server(smb) / "M 42_sub", "new.fit", chunks=2, pause=0.1)
    wait_for(lambda: len(smb.runs()) == 2, timeout=20)
    daemon.wait_for_event("pipeline.finished", count=2)
    assert daemon.stop() == 0
    assert sorted(smb.run_sources()) == sorted(url_of(smb, p) for p in (new, old))


@pytest.mark.smb
@pytest.mark.slow
def test_folders_samba_shows_under_two_spellings_run_their_frames_once(
    smb: Scope, daemons: list[DaemonProcess]
) -> None:
    smb.update(image_watcher={"rescan_interval": 1})
    daemon = start(smb, daemons)
    names = {"...": "dots.fit", "   ": "spaces.fit", "M:42_sub": "colon.fit"}
    for folder, name in names.items():
        telescope_writes(server(smb) / folder, name, chunks=2, pause=0.1)
    wait_for(lambda: len(smb.runs()) >= 3, timeout=20)
    daemon.wait_for_next("scan.finished")  # a listing spells them otherwise
    time.sleep(1.0)  # a late notification must not run anything twice
    assert daemon.stop() == 0
    # each frame once, under the one spelling a listing gives it (Samba's 8.3 name)
    ran = sorted(source.rsplit("/", 1)[1] for source in smb.run_sources())
    assert ran == ["colon.fit", "dots.fit", "spaces.fit"]
    assert not any(f"/{folder}/" in s for folder in names for s in smb.run_sources())


# -- the same through a mount (smbnetfs): what the client shows of them -------------------


@pytest.mark.smb
@pytest.mark.slow
def test_through_a_mount_a_folder_that_links_to_itself_is_listed_once(
    samba: SambaShare, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    samba.restore()
    folder = samba.server / "MyWorks" / "mounted_loop"
    old = telescope_writes(folder / "M 42_sub", "old.fit", chunks=1, pause=0)
    (folder / "loop").symlink_to(".")  # each path its own inode on the mount: no cycle seen
    mounted = samba.share / "MyWorks" / "mounted_loop"
    wait_for((mounted / "loop").is_dir, timeout=15)
    scope = Scope(
        tmp_path,
        image_watcher={
            "watch_path": str(mounted),
            "mount_point": str(samba.mount_point),
            "rescan_interval": 2,
            "poll_interval": 0.5,
            "debounce_delay": 1.0,
        },
        state={"process_existing": True},
    )
    check = scope.cli("check-mount", "--json", timeout=60)
    assert json.loads(check.stdout)["frames"] == 1, check.stdout
    daemon = started_daemon(scope, daemons, until="watcher.started")
    new = telescope_writes(folder / "M 42_sub", "new.fit", chunks=2, pause=0.1)
    wait_for(lambda: len(scope.runs()) == 2, timeout=30)
    daemon.wait_for_next("scan.finished", timeout=30)
    assert daemon.stop() == 0
    assert sorted(scope.run_sources()) == sorted(
        str(mounted / "M 42_sub" / p.name) for p in (new, old)
    )


@needs_impacket
@pytest.mark.slow
def test_smb_fixes_keep_the_port_and_speak_of_no_mount(tmp_path: Path, share_folder: Path) -> None:
    with HostileServer(share_folder) as hostile:
        scope = hostile_scope(tmp_path, hostile)
        scope.update(image_watcher={"watch_path": f"{hostile.url}/MyWork"})  # MyWorks misspelt
        check = scope.cli("check-mount", "--timeout", "10")
        assert check.returncode == 1
        assert (
            f"fix: the Seestar keeps its frames in MyWorks/: {hostile.url}/MyWorks" in check.stdout
        )
        described = scope.cli("check-config").stdout
        assert "share: read over SMB directly, no mount" in described
        assert "no mount_point set" not in described
        ran = scope.cli("run", "--no-wait")
        assert (
            ran.returncode == 1 and "`seestar-watch check-mount` says what is wrong" in ran.stderr
        )
