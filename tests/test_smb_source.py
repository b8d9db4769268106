"""smb://: the telescope's share read with no mount, against a real Samba server.

Frames are written into the server's own folder, as the telescope writes them; the
daemon connects over SMB itself (no mount is used by these tests, though the test bed
has one for the mount tests).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seestar_watch import ImageWatcher
from tests.conftest import Recorder, frame_bytes, real_header, wait_for
from tests.harness import DaemonProcess, Scope, started_daemon
from tests.smbshare import SambaShare, telescope_writes

pytestmark = [pytest.mark.smb, pytest.mark.slow]
SHARE_URL = "smb://127.0.0.1/EMMC Images"


@pytest.fixture
def smb(samba: SambaShare, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scope]:
    """A Scope whose watch_path is this test's own folder of the share, as an smb:// URL."""
    samba.restore()
    name = request.node.name[:60].replace("[", "_").replace("]", "")
    folder = samba.server / "MyWorks" / name
    folder.mkdir()
    scope = Scope(
        tmp_path,
        image_watcher={
            "watch_path": f"{SHARE_URL}/MyWorks/{name}",
            "observer": "auto",
            "mount_retry": 0.5,
            "rescan_interval": 60,
            "poll_interval": 60,  # far above the latency: only notifications explain it
            "debounce_delay": 0.5,
            "smb_timeout": 2,
        },
    )
    scope.server_folder = folder  # type: ignore[attr-defined]
    scope.url = f"{SHARE_URL}/MyWorks/{name}"  # type: ignore[attr-defined]
    yield scope
    samba.restore()


def start(scope: Scope, daemons: list[DaemonProcess], *args: str) -> DaemonProcess:
    return started_daemon(scope, daemons, *args, until="watcher.started")


def server(scope: Scope) -> Path:
    return scope.server_folder  # type: ignore[attr-defined,no-any-return]


def url_of(scope: Scope, server_path: Path) -> str:
    return f"{scope.url}/{server_path.relative_to(server(scope)).as_posix()}"  # type: ignore[attr-defined]


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file below `folder`: size, mtime and content hash (the server's files)."""
    return {
        str(path.relative_to(folder)): (
            path.stat().st_size,
            path.stat().st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_frames_are_heard_from_the_server_and_run_exactly_once(
    smb: Scope, daemons: list[DaemonProcess]
) -> None:
    daemon = start(smb, daemons)
    started = daemon.wait_for_event("watcher.started")[0]
    assert started["observer"] == "notify"
    sub = server(smb) / "M 42_sub"
    first = telescope_writes(sub, "Light_M 42_10.0s_IRCUT_20250326-212046.fit")
    written = time.monotonic()
    wait_for(lambda: len(smb.runs()) == 1, timeout=10)
    # heard long before the next listing (poll_interval and rescan_interval are 60 s)
    assert time.monotonic() - written < 5
    renamed = telescope_writes(sub, "Light_M 42_10.0s_IRCUT_20250326-212058.fit", via_temp=True)
    later = server(smb) / "M 81_sub"  # a target folder made after the start
    third = telescope_writes(later, "Light_M 81_10.0s_IRCUT_20250326-213000.fit")
    wait_for(lambda: len(smb.runs()) == 3, timeout=15)
    daemon.wait_for_event("pipeline.finished", count=3)
    time.sleep(1.5)  # a late notification must not run anything twice
    assert daemon.stop() == 0
    assert sorted(smb.run_sources()) == sorted(url_of(smb, p) for p in (first, renamed, third))
    assert not any(".tmp" in source for source in smb.run_sources())


def test_source_is_the_unencoded_url_and_the_archive_copy_is_exact_and_the_share_untouched(
    smb: Scope, daemons: list[DaemonProcess]
) -> None:
    daemon = start(smb, daemons)
    content = frame_bytes(real_header())
    names = ["$(touch x).fit", "a;b.fit", "-leading.fit", "Étoile ünïcode.fit"]
    for name in names:
        telescope_writes(server(smb) / "M 94_sub", name, content=content, chunks=2, pause=0.1)
    before = snapshot(server(smb))
    wait_for(lambda: len(smb.runs()) == len(names), timeout=20)
    daemon.wait_for_event("pipeline.finished", count=len(names))
    assert daemon.stop() == 0
    assert snapshot(server(smb)) == before  # nothing written, renamed or deleted
    assert not (Path.cwd() / "x").exists()
    runs = {run["source"]: run for run in smb.runs()}
    for name in names:
        source = f"{smb.url}/M 94_sub/{name}"  # type: ignore[attr-defined]
        run = runs[source]  # {source} and the event's source: the smb:// URL as written
        copy = Path(run["argv"][0])
        assert copy.read_bytes() == content and copy.name == name
        event = json.loads(run["stdin"])
        assert event["source"] == source and event["relpath"] == f"M 94_sub/{name}"


def test_a_server_that_stops_and_starts_loses_nothing_and_runs_nothing_twice(
    samba: SambaShare, smb: Scope, daemons: list[DaemonProcess]
) -> None:
    daemon = start(smb, daemons)
    telescope_writes(server(smb) / "M 42_sub", "before.fit")
    wait_for(lambda: len(smb.runs()) == 1, timeout=10)
    samba.stop_server()
    daemon.wait_for_event("share.lost", timeout=15)
    telescope_writes(server(smb) / "M 42_sub", "while_away.fit")  # the scope kept imaging
    samba.start_server()
    daemon.wait_for_event("share.restored", timeout=20)
    telescope_writes(server(smb) / "M 42_sub", "after.fit")
    wait_for(lambda: len(smb.runs()) == 3, timeout=20)
    daemon.wait_for_event("pipeline.finished", count=3)
    assert daemon.stop() == 0
    names = sorted(source.rsplit("/", 1)[1] for source in smb.run_sources())
    assert names == ["after.fit", "before.fit", "while_away.fit"]
    assert not daemon.events("frame.failed") and not daemon.events("frame.rejected")


def test_a_server_that_stops_answering_is_lost_within_the_timeout_and_sigterm_still_stops(
    samba: SambaShare, smb: Scope, daemons: list[DaemonProcess]
) -> None:
    smb.update(pipeline={"shutdown_grace": 2})
    daemon = start(smb, daemons)
    telescope_writes(server(smb) / "M 42_sub", "a.fit")
    wait_for(lambda: len(smb.runs()) == 1, timeout=10)
    samba.freeze_server()  # accepts connections, answers nothing
    try:
        frozen = time.monotonic()
        daemon.wait_for_event("share.lost", timeout=20)
        # the supervisor looks every 5 s; the look itself gives up after smb_timeout (2 s)
        assert time.monotonic() - frozen < 5 + 2 + 3
        stopping = time.monotonic()
        assert daemon.stop(signal.SIGTERM, timeout=30) == 0
        assert time.monotonic() - stopping < 2 + 5 + 5  # grace + TERM grace + margin
    finally:
        samba.thaw_server()


def test_a_server_without_change_notifications_still_gets_every_frame_run(
    samba: SambaShare, smb: Scope, daemons: list[DaemonProcess]
) -> None:
    samba.reconfigure("  change notify = no")
    smb.update(image_watcher={"rescan_interval": 1, "poll_interval": 0.5})
    daemon = start(smb, daemons)
    names = [f"Light_{n}.fit" for n in range(4)]
    for name in names:
        telescope_writes(server(smb) / "M 42_sub", name, chunks=2, pause=0.1)
    wait_for(lambda: len(smb.runs()) == len(names), timeout=30)
    daemon.wait_for_event("pipeline.finished", count=len(names))
    assert daemon.stop() == 0
    assert sorted(s.rsplit("/", 1)[1] for s in smb.run_sources()) == names
    # said once: at start when the server refuses at once, else when it is found out
    (started,) = daemon.events("watcher.started")
    said = daemon.events("smb.notify_silent") + daemon.events("smb.notify_unsupported")
    if started["observer"] == "polling":
        assert "refuses change notifications" in started["reason"] and not said
    else:
        assert len(said) == 1  # then listings every poll_interval


def test_a_wrong_share_a_wrong_host_and_a_refused_login_each_give_one_clear_line(
    samba: SambaShare, smb: Scope
) -> None:
    smb.update(image_watcher={"watch_path": "smb://127.0.0.1/Seestar/MyWorks"})
    check = smb.cli("check-mount")
    assert check.returncode == 1
    assert "no share named 'Seestar' on 127.0.0.1" in check.stdout
    assert "use smb://127.0.0.1/EMMC Images/MyWorks" in check.stdout
    run = smb.cli("run", "--no-wait")
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1
    assert "no share named 'Seestar'" in run.stderr

    smb.update(image_watcher={"watch_path": "smb://no-such-host.invalid/EMMC Images/MyWorks"})
    check = smb.cli("check-mount")
    assert check.returncode == 1 and "cannot resolve no-such-host.invalid" in check.stdout
    run = smb.cli("run", "--no-wait")
    assert run.returncode == 1 and "cannot resolve no-such-host.invalid" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1

    samba.reconfigure("  map to guest = Never\n  restrict anonymous = 2")
    smb.update(image_watcher={"watch_path": f"{SHARE_URL}/MyWorks"})
    check = smb.cli("check-mount")
    assert check.returncode == 1 and "refused the 'guest' login" in check.stdout
    run = smb.cli("run", "--no-wait")
    assert run.returncode == 1 and "refused the 'guest' login" in run.stderr
    assert "Traceback" not in run.stderr + check.stdout + check.stderr


def test_check_mount_walks_every_step_and_says_whether_notifications_work(smb: Scope) -> None:
    telescope_writes(server(smb) / "M 42_sub", "a.fit", chunks=1, pause=0)
    result = smb.cli("check-mount", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [check["name"] for check in report["checks"]] == [
        "host", "port", "dialect", "login", "share", "folder", "answers", "readable", "observer"
    ]  # fmt: skip
    assert all(check["status"] == "ok" for check in report["checks"]), report["checks"][-1]
    assert report["frames"] == 1 and report["targets"] == 1 and report["observer"] == "notify"


def test_switching_between_a_mount_and_smb_runs_nothing_again(
    samba: SambaShare, smb: Scope, daemons: list[DaemonProcess]
) -> None:
    name = server(smb).name
    telescope_writes(server(smb) / "M 42_sub", "a.fit")
    mounted = {
        "watch_path": str(samba.share / "MyWorks" / name),
        "mount_point": str(samba.mount_point),
        "poll_interval": 0.5,
    }
    smb.update(image_watcher=mounted, state={"process_existing": True})
    wait_for((samba.share / "MyWorks" / name / "M 42_sub" / "a.fit").exists, timeout=15)
    assert smb.cli("run", "--once").returncode == 0
    assert len(smb.runs()) == 1
    smb.update(
        image_watcher={"watch_path": smb.url, "mount_point": None}  # type: ignore[attr-defined]
    )
    assert smb.cli("run", "--once").returncode == 0
    assert len(smb.runs()) == 1  # the same versions: nothing to run again


def test_config_errors_for_what_cannot_go_with_smb(smb: Scope) -> None:
    smb.update(
        image_watcher={"mount_point": "/mnt/seestar", "observer": "native"},
        archive={"enabled": False},
    )
    check = smb.cli("check-config")
    assert check.returncode == 1
    assert "image_watcher.mount_point: not used with an smb:// watch_path" in check.stderr
    assert "image_watcher.observer: native needs a local folder" in check.stderr
    assert "archive.enabled: false cannot go with an smb:// watch_path" in check.stderr


def test_image_watcher_takes_an_smb_url(smb: Scope, recorder: Recorder) -> None:
    watcher = ImageWatcher(smb.url, recorder, 0.3, recursive=True)  # type: ignore[attr-defined]
    assert watcher.start()
    try:
        frame = telescope_writes(server(smb) / "M 42_sub", "a.fit", chunks=2, pause=0.1)
        wait_for(lambda: recorder.events, timeout=10)
    finally:
        watcher.stop()
    assert recorder.paths == [url_of(smb, frame)]
    assert recorder.events[0]["header"]["OBJECT"]


def test_percent_encoded_share_names_are_the_same_share(tmp_path: Path) -> None:
    from seestar_watch.config import parse_config

    def watch(path: str) -> Any:
        raw = {"image_watcher": {"watch_path": path}, "pipeline": {"command": ["true"]}}
        return parse_config(raw, tmp_path / "c.yaml").image_watcher.watch_path

    spaced = watch("smb://seestar.local/EMMC Images/MyWorks")
    assert watch("smb://seestar.local/EMMC%20Images/MyWorks") == spaced
    assert str(spaced) == "smb://seestar.local/EMMC Images/MyWorks"
    secret = watch("smb://ann:hunter2@seestar.local/EMMC Images/MyWorks")
    assert "hunter2" not in str(secret) and "hunter2" not in repr(secret)
    assert os.fspath(tmp_path)  # the URLs need no local folder


@pytest.mark.parametrize("wrong", ["folder", "share"])
def test_a_wrong_folder_or_share_waits_never_up(
    samba: SambaShare, smb: Scope, daemons: list[DaemonProcess], wrong: str
) -> None:
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = server(smb) / "MyWork"
    watched = (
        f"{smb.url}/MyWork"
        if wrong == "folder"
        else f"{SHARE_URL.replace('EMMC Images', 'Seestar')}/MyWorks"
    )  # type: ignore[attr-defined]
    smb.update(image_watcher={"watch_path": watched}, dashboard={"listen": f"127.0.0.1:{port}"})
    daemon = started_daemon(smb, daemons, until="share.waiting")
    daemon.wait_for_event("dashboard.started")
    seen = set()
    deadline = time.monotonic() + 4  # eight checks of the share (mount_retry 0.5 s)
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as answer:
            view = json.load(answer)["daemon"]
        seen.add((view["share"], view["reason"]))
        time.sleep(0.2)
    assert {share for share, _ in seen} == {"down"} and not daemon.events("share.ready")
    said = "does not exist" if wrong == "folder" else "no share named 'Seestar'"
    assert all(said in reason for _, reason in seen)
    assert said in smb.cli("status").stdout.splitlines()[1]
    if wrong == "folder":
        folder.mkdir()  # and once it is there, it is up
        daemon.wait_for_event("share.ready", timeout=20)
    assert daemon.stop() == 0


def test_process_and_retry_take_an_smb_frame_as_status_prints_it(
    smb: Scope, daemons: list[DaemonProcess]
) -> None:
    first = telescope_writes(server(smb) / "M 42_sub", "a.fit", chunks=1, pause=0)
    url = url_of(smb, first)
    new = smb.cli("process", url)  # not in the ledger yet: read from the share
    assert new.returncode == 0, new.stderr
    assert new.stdout == f"done\t{url}\n"
    (shown,) = json.loads(smb.cli("status", "--json").stdout)["frames"]
    assert shown["source"] == url
    again = smb.cli("process", "--force", shown["source"])
    assert again.returncode == 0, again.stderr
    said = smb.cli("retry", shown["source"])
    assert said.returncode == 0 and f"{url}: done, not failed" in said.stdout, said.stderr
    assert smb.run_sources() == [url, url]
