"""The ledger on real SQLite files: versions, queue order, recovery, locking, corruption."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from seestar_watch.history import History
from seestar_watch.ledger import SCHEMA_VERSION, InstanceLock, Ledger, LedgerError
from seestar_watch.sources import Version


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    opened = Ledger.open(tmp_path / "state" / "ledger.sqlite3")
    yield opened  # type: ignore[misc]
    opened.close()


def v(name: str, size: int = 100, mtime: int = 1) -> Version:
    return Version(name, size, mtime)


def test_created_with_wal_full_sync_and_a_schema_version(ledger: Ledger) -> None:
    db = sqlite3.connect(ledger.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert ledger._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_any_bytes_round_trip_as_a_path(ledger: Ledger) -> None:
    name = b"M 42_sub/caf\xe9\xff\n$(x).fit"  # not UTF-8: its bytes ride as surrogate escapes
    assert ledger.add_pending(v(os.fsdecode(name)), {"OBJECT": "M 42"})
    (stored,) = ledger.read("SELECT relpath FROM frames")
    assert stored == (name,)  # the ledger holds the name's own bytes
    frame = ledger.claim_next()
    assert frame is not None and os.fsencode(frame.version.relpath) == name
    assert frame.header == {"OBJECT": "M 42"} and frame.attempts == 1


def test_a_version_is_recorded_once_and_a_new_version_is_new(ledger: Ledger) -> None:
    assert ledger.add_pending(v("a.fit"), {})
    assert not ledger.add_pending(v("a.fit"), {})
    assert ledger.add_pending(v("a.fit", size=200), {})
    assert ledger.add_pending(v("a.fit", mtime=2), {})
    assert History(ledger).counts()["pending"] == 3


def test_frames_are_claimed_in_arrival_order_and_retries_wait(ledger: Ledger) -> None:
    for name in ("1.fit", "2.fit", "3.fit"):
        ledger.add_pending(v(name), {})
    first = ledger.claim_next()
    assert first is not None and first.version.relpath == "1.fit"
    ledger.retry_later(first.id, 60, exit_code=1, duration=0.1, reason="exit code 1")
    claimed = [ledger.claim_next(), ledger.claim_next(), ledger.claim_next()]
    assert [f.version.relpath if f else None for f in claimed] == ["2.fit", "3.fit", None]
    due = ledger.seconds_until_due()
    assert due is not None and 55 < due <= 60


def test_running_rows_go_back_to_pending_at_start(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger.open(path)
    ledger.add_pending(v("a.fit"), {})
    assert ledger.claim_next() is not None
    ledger._db.close()  # as if killed: no cleanup
    again = Ledger.open(path)
    assert again.recover_running() == 1
    frame = again.claim_next()
    assert frame is not None and frame.attempts == 2


def test_release_does_not_count_the_interrupted_attempt(ledger: Ledger) -> None:
    ledger.add_pending(v("a.fit"), {})
    frame = ledger.claim_next()
    assert frame is not None
    ledger.release(frame.id)
    again = ledger.claim_next()
    assert again is not None and again.attempts == 1


def test_retry_failed_all_or_by_path(ledger: Ledger) -> None:
    for name in ("a.fit", "b.fit"):
        ledger.add_pending(v(name), {})
        frame = ledger.claim_next()
        assert frame is not None
        ledger.finish(frame.id, "failed", exit_code=1)
    assert ledger.retry_failed(["b.fit", "nothing.fit"]) == 1
    assert ledger.retry_failed() == 1
    assert History(ledger).counts()["pending"] == 2


def test_baseline_only_once(ledger: Ledger) -> None:
    assert ledger.is_new()
    assert ledger.record_baseline([v("old.fit")]) == 1
    assert not ledger.is_new()
    assert History(ledger).counts()["skipped"] == 1


def test_a_corrupt_ledger_is_an_error_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(LedgerError, match="unreadable or corrupt"):
        Ledger.open(path)
    assert path.read_bytes() == b"garbage" * 1000


def test_a_foreign_or_newer_database_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.sqlite3"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)")
    with pytest.raises(LedgerError, match="not a seestar-watch ledger"):
        Ledger.open(foreign)
    newer = tmp_path / "newer.sqlite3"
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(LedgerError, match="newer seestar-watch"):
        Ledger.open(newer)


def test_the_lock_admits_one_holder(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    first, second = InstanceLock(path), InstanceLock(path)
    first.acquire()
    with pytest.raises(LedgerError, match="in use by another seestar-watch"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_readonly_open_reads_while_a_writer_holds_it(ledger: Ledger) -> None:
    ledger.add_pending(v("a.fit"), {})
    reader = Ledger.open(ledger.path, readonly=True)
    assert History(reader).counts()["pending"] == 1
    assert History(reader).recent(5)[0].relpath == "a.fit"
    reader.close()


def test_a_retry_stored_before_the_clock_stepped_back_is_due_now(ledger: Ledger) -> None:
    # NTP corrects a Raspberry Pi without a real-time clock: an hour back. A retry stored
    # "5 s from now" before the step now looks due in an hour and 5 s.
    ledger.add_pending(v("a.fit"), {})
    first = ledger.claim_next()
    assert first is not None
    ledger.retry_later(first.id, 5 + 3600, exit_code=1, duration=0.1, reason="exit code 1")
    longest = 30.0 * 2  # retry_delay 30 s, 2 retries
    assert ledger.claim_next() is None  # without the bound: an hour's wait
    assert ledger.seconds_until_due(longest_wait=longest) == 0.0
    again = ledger.claim_next(longest)
    assert again is not None and again.id == first.id


def test_a_retry_due_within_the_longest_delay_still_waits(ledger: Ledger) -> None:
    ledger.add_pending(v("a.fit"), {})
    first = ledger.claim_next()
    assert first is not None
    ledger.retry_later(first.id, 50, exit_code=1, duration=0.1, reason="exit code 1")
    assert ledger.claim_next(60.0) is None
    due = ledger.seconds_until_due(longest_wait=60.0)
    assert due is not None and 45 < due <= 50


V1_FRAMES = """CREATE TABLE frames (
    id INTEGER PRIMARY KEY, relpath BLOB NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, state TEXT NOT NULL, reason TEXT, header TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, exit_code INTEGER, archived BLOB, not_before REAL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, started_at REAL, duration REAL,
    UNIQUE (relpath, size, mtime_ns))"""


def test_a_ledger_of_schema_1_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    old = sqlite3.connect(path)
    old.execute(V1_FRAMES)
    old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    old.execute(
        "INSERT INTO frames (relpath, size, mtime_ns, state, created_at, updated_at)"
        " VALUES (x'612e666974', 1, 2, 'done', 0, 0)"
    )
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    ledger = Ledger.open(path)
    try:
        assert History(ledger).counts()["done"] == 1
        assert ledger.knows(v("a.fit", 1, 2))
        ledger.add_pending(v("b.fit"), {})
        frame = ledger.claim_next()
        assert frame is not None
        ledger.set_pid(frame.id, 12345, 1.5)
        assert ledger.orphans() == [("b.fit", 12345, 1.5)]
    finally:
        ledger.close()


def test_a_ledger_of_schema_2_gets_results_and_is_read_as_it_is_until_then(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        V1_FRAMES.replace("duration REAL,", "duration REAL, pid INTEGER, pid_started REAL,")
    )
    old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    old.execute(
        "INSERT INTO frames (relpath, size, mtime_ns, state, header, created_at, updated_at)"
        """ VALUES (x'612e666974', 1, 2, 'done', '{"OBJECT": "M 94"}', 0, 0)"""
    )
    old.execute("PRAGMA user_version = 2")
    old.commit()
    old.close()
    with Ledger.reading(path) as reader:  # an old daemon still holds it: no migration
        (row,) = History(reader).recent(5)
        assert row.result is None and row.object == "M 94"
    ledger = Ledger.open(path)
    try:
        ledger.add_pending(v("b.fit"), {})
        frame = ledger.claim_next()
        assert frame is not None
        ledger.finish(frame.id, "done", exit_code=0, duration=1.0, result={"stars": 12})
        assert History(ledger).recent(1)[0].result == {"stars": 12}
    finally:
        ledger.close()


def test_frames_changed_since_a_cursor_continue_exactly_where_the_last_page_ended(
    ledger: Ledger,
) -> None:
    for n in range(5):
        ledger.add_pending(v(f"{n}.fit"), {"OBJECT": f"T{n}", "DATE-OBS": "2024-05-04"})
    db = sqlite3.connect(ledger.path)
    db.execute("UPDATE frames SET updated_at = 100.0")  # all in the same instant
    db.commit()
    seen, cursor = [], (0.0, 0)
    while page := History(ledger).changed_since(*cursor, limit=2):
        seen += [row.relpath for row in page]
        cursor = (page[-1].updated_at, page[-1].id)
    assert seen == [f"{n}.fit" for n in range(5)]
    assert History(ledger).changed_since(100.0, 5, 10) == []
    assert History(ledger).recent(1)[0].header()["OBJECT"] == "T4"


def test_a_header_sqlite_cannot_read_shows_blanks_instead_of_breaking_every_query(
    ledger: Ledger,
) -> None:
    ledger.add_pending(v("nan.fit"), {"OBJECT": "M 31", "EXPTIME": float("nan")})
    (row,) = History(ledger).recent(5)
    assert row.object is None and row.relpath == "nan.fit"
    assert ledger.claim_next() is not None  # the header itself is kept whole


def test_duration_counts_are_a_histogram_of_the_runs(ledger: Ledger) -> None:
    for n, duration in enumerate([0.5, 2.0, 30.0]):
        ledger.add_pending(v(f"{n}.fit"), {})
        frame = ledger.claim_next()
        assert frame is not None
        ledger.finish(frame.id, "done", exit_code=0, duration=duration)
    assert History(ledger).duration_counts([1.0, 10.0]) == ([1, 2], 3, 32.5)
