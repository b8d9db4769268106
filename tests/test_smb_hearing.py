"""How an SMB share's changes are heard, decided by `Hearing` alone: handed listings and
the frames notifications named, as the source and its thread hand them. No server is
needed to judge a server silent: that is the point of the decision having one home. And
the source's check, which the tree tells when a listing of the watched folder failed."""

from __future__ import annotations

import logging

import pytest

from seestar_watch.sources import Stamp
from seestar_watch.sources.smbnotify import Hearing
from seestar_watch.sources.smbtree import changed_since

FIRST = {"M 42_sub/a.fit": Stamp(100, 1)}
GROWN = {"M 42_sub/a.fit": Stamp(200, 2)}
SECOND = {**FIRST, "M 42_sub/b.fit": Stamp(100, 3)}
THIRD = {**SECOND, "M 42_sub/c.fit": Stamp(100, 4)}


class Woken:
    def __init__(self) -> None:
        self.times = 0

    def __call__(self) -> None:
        self.times += 1


def notifying() -> tuple[Hearing, Woken]:
    hearing, woken = Hearing(notify_allowed=True, poll_interval=2.0), Woken()
    hearing.started("notify", woken)
    hearing.armed()
    return hearing, woken


def silent_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.msg.name == "smb.notify_silent"]


def test_a_frame_no_notification_announced_makes_the_server_silent_for_good(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hearing, woken = notifying()
    hearing.listed(FIRST)  # the reference
    hearing.listed(SECOND)  # b is new: a suspect, judged one listing late
    assert hearing.notifying and not woken.times
    hearing.listed(THIRD)  # b never announced: silent
    assert hearing.mode == "polling" and hearing.silent and woken.times == 1
    assert not hearing.may_notify  # a new watch lists from the start
    (said,) = silent_warnings(caplog)
    assert said.example == "M 42_sub/b.fit" and said.frames == 1  # type: ignore[attr-defined]
    hearing.listed({**THIRD, "M 42_sub/d.fit": Stamp(1, 5)})
    hearing.listed(THIRD)
    assert len(silent_warnings(caplog)) == 1 and woken.times == 1  # said once


def test_a_frame_announced_before_or_after_the_listing_that_saw_it_is_heard() -> None:
    hearing, woken = notifying()
    hearing.listed(FIRST)
    hearing.announce("M 42_sub/b.fit")  # the notification came first
    hearing.listed(SECOND)
    hearing.listed(SECOND)
    hearing.listed(THIRD)  # the listing saw c a moment before its notification...
    hearing.announce("M 42_sub/c.fit")  # ...which came in before the next listing
    hearing.listed(THIRD)
    assert hearing.notifying and not hearing.silent and not woken.times


def test_a_frame_that_grew_unannounced_counts_as_much_as_a_new_one() -> None:
    hearing, _ = notifying()
    hearing.listed(FIRST)
    hearing.listed(GROWN)
    hearing.listed(GROWN)
    assert hearing.silent


def test_listings_judge_nothing_before_notifications_are_armed_or_when_listing_only() -> None:
    hearing, woken = notifying()
    hearing.listed(FIRST)
    hearing.listed(SECOND)
    hearing.armed()  # armed again (the connection came back): the next listing is the reference
    hearing.listed(THIRD)
    hearing.listed(THIRD)
    assert not hearing.silent
    polling = Hearing(notify_allowed=False, poll_interval=2.0)
    assert not polling.may_notify
    polling.started("polling", woken)
    for listing in (FIRST, SECOND, THIRD, THIRD):
        polling.listed(listing)
    assert not polling.silent and polling.reference() == THIRD and not woken.times


def test_listings_made_while_no_watch_runs_judge_nothing() -> None:
    # the share went away and the watch with it: nothing can announce a frame until the next
    # watch is armed, so the intake's listings meanwhile are no evidence of silence
    hearing, _ = notifying()
    hearing.listed(FIRST)
    hearing.stopped()
    hearing.listed(SECOND)
    hearing.listed(THIRD)
    assert not hearing.silent and hearing.mode == "notify"  # the status still says how


def test_a_refusal_means_listings_for_this_watch_and_notifications_asked_for_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hearing, woken = notifying()
    hearing.refused("STATUS_NOT_SUPPORTED")
    assert hearing.mode == "polling" and woken.times == 1
    assert hearing.may_notify  # a refusal may pass (a server just started); silence does not
    assert any(r.msg.name == "smb.notify_unsupported" for r in caplog.records)


def test_changed_since_names_new_and_other_versions_only() -> None:
    assert changed_since(FIRST, THIRD) == ["M 42_sub/b.fit", "M 42_sub/c.fit"]
    assert changed_since(FIRST, GROWN) == ["M 42_sub/a.fit"]
    assert changed_since(THIRD, FIRST) == []  # gone is not a change to report


def test_a_failed_listing_of_the_watched_folder_makes_the_next_check_list_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # while the server answers, a check is an ECHO and the folder is listed once a minute; a
    # listing of the watched folder that failed (a rescan's, or a check's own after the
    # connection dropped) means the next check lists it instead of trusting an ECHO
    from seestar_watch.sources.smb import SmbSource
    from seestar_watch.sources.smbconnection import SmbClient
    from seestar_watch.sources.smburl import parse_smb_url

    source = SmbSource(parse_smb_url("smb://127.0.0.1/EMMC Images/MyWorks"))
    said: list[str] = []
    server = {"connected": True, "folder": True}

    def call(function: object) -> list[object]:  # the server, as the tree's one call sees it
        said.append("list")
        if not server["folder"]:
            raise OSError(2, "gone")
        return []

    monkeypatch.setattr(SmbClient, "connected", property(lambda self: server["connected"]))
    monkeypatch.setattr(source.client, "call", call)
    monkeypatch.setattr(source.client, "echo", lambda: said.append("echo"))

    def check() -> tuple[bool, str]:
        said.clear()
        return source.check(1).is_available, said[0]

    assert check() == (True, "list")
    assert check() == (True, "echo")
    server["folder"] = False
    with pytest.raises(OSError):
        list(source.list_frames())  # a rescan fails on the watched folder
    assert check() == (False, "list")
    server["folder"] = True
    assert check() == (True, "list")
    assert check() == (True, "echo")
    # the connection dropped: the check lists (and fails) although a listing is not due yet
    server["connected"], server["folder"] = False, False
    assert check() == (False, "list")
    server["connected"] = True  # connected again, the folder still gone: no ECHO
    assert check() == (False, "list")
