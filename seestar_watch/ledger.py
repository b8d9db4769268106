"""The ledger: what has been seen and done, in SQLite on local disk.

One row per frame *version* (path, size, mtime): a frame that is done never runs
again, a new version of it does. The ledger is also the work queue: pending rows
wait here, oldest first, not in a list in memory, so a restart or a crash
loses nothing (rows left `running` by a killed daemon go back to `pending`).

Paths are stored relative to watch_path as the raw bytes of the name, so names
that are not UTF-8 round-trip exactly; they come and go as text (os.fsdecode).
Opened, migrated and closed here only. The reading for people is history.py's.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from seestar_watch.errors import UserError
from seestar_watch.log import get_logger
from seestar_watch.outcomes import STATES, State
from seestar_watch.sources import Version

SCHEMA_VERSION = 4
WRITE_RETRY = 2.0  # seconds between two tries of a ledger write that failed
T = TypeVar("T")
log = get_logger("seestar_watch.ledger")

_SCHEMA = f"""
CREATE TABLE frames (
    id INTEGER PRIMARY KEY,
    relpath BLOB NOT NULL,              -- path below watch_path, raw bytes of the name
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ({", ".join(f"'{state}'" for state in STATES)})),
    reason TEXT,                        -- why rejected or failed
    header TEXT,                        -- the flat primary header as JSON
    attempts INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    archived BLOB,                      -- the local copy the pipeline read (raw bytes)
    not_before REAL,                    -- a retry waits until then (unix time)
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    duration REAL,
    pid INTEGER,                        -- the running command's process group
    pid_started REAL,                   -- and its start time (pids are reused)
    result TEXT,                        -- what the command wrote to $SEESTAR_WATCH_RESULT (JSON)
    task TEXT,                          -- the task queue's id of the attempt (executor: celery)
    UNIQUE (relpath, size, mtime_ns)
);
CREATE INDEX frames_by_state ON frames (state, id);
CREATE INDEX frames_by_update ON frames (updated_at);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Frame:
    id: int
    version: Version
    header: dict[str, Any]
    attempts: int
    archived: str | None
    task: str | None = None  # the attempt a daemon submitted to the task queue, if any


@dataclass(frozen=True)
class Recorded:
    """A frame as the ledger recorded it, whatever its state."""

    id: int
    version: Version
    state: State
    header: dict[str, Any]
    archived: str | None


_RECORDED = "id, relpath, size, mtime_ns, state, header, archived"
_FINISHED = "'done', 'skipped', 'rejected'"  # states whose archived copy nothing needs


def _version(columns: tuple[Any, ...]) -> Version:
    """A Version from the (relpath, size, mtime_ns) columns: the name's bytes as text."""
    relpath, size, mtime_ns = columns
    return Version(os.fsdecode(bytes(relpath)), size, mtime_ns)


def _recorded(row: tuple[Any, ...]) -> Recorded:
    header = json.loads(row[5]) if row[5] else {}
    archived = None if row[6] is None else os.fsdecode(bytes(row[6]))
    return Recorded(
        row[0], Version(os.fsdecode(bytes(row[1])), row[2], row[3]), row[4], header, archived
    )


class LedgerError(UserError):
    pass


class InstanceLock:
    """One daemon per ledger: an exclusive flock on `<ledger>.lock`, freed when the process dies."""

    def __init__(self, ledger_path: Path) -> None:
        self.path = ledger_path.with_name(ledger_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise cannot_write(self.path.with_suffix(""), exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LedgerError(
                f"the ledger {self.path.with_suffix('')} is in use by another seestar-watch"
                f" (pid {holder}); stop it first, or give this one its own state.path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Ledger:
    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self.path = path
        self._db = connection
        self._lock = threading.Lock()
        self._stopping: threading.Event | None = None  # set by keep_trying
        self._on_retry: Callable[[], None] = lambda: None
        self._trouble_since: float | None = None  # when writes started to fail
        self._result = "result"  # the column, or NULL in an older ledger opened read-only

    @classmethod
    @contextmanager
    def exclusive(cls, path: Path) -> Iterator[Ledger]:
        """The ledger, held by this process alone (a daemon, or `process`): a second one
        exits 1 with who holds it. Closed, and the lock freed, on the way out."""
        lock = InstanceLock(path)
        lock.acquire()
        try:
            ledger = cls.open(path)
            try:
                yield ledger
            finally:
                ledger.close()
        finally:
            lock.release()

    @classmethod
    @contextmanager
    def reading(cls, path: Path) -> Iterator[Ledger]:
        """The ledger opened read-only (status, reports), even while a daemon runs."""
        ledger = cls.open(path, readonly=True)
        try:
            yield ledger
        finally:
            ledger.close()

    @classmethod
    @contextmanager
    def shared(cls, path: Path) -> Iterator[Ledger]:
        """The ledger opened for a short write beside a running daemon (`retry`)."""
        ledger = cls.open(path)
        try:
            yield ledger
        finally:
            ledger.close()

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> Ledger:
        """Open (creating when writable and absent) and migrate; LedgerError when unusable."""
        try:
            if readonly:
                db = sqlite3.connect(
                    path.absolute().as_uri() + "?mode=ro",
                    uri=True,
                    timeout=10,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(
                    path, timeout=10, isolation_level=None, check_same_thread=False
                )
            ledger = cls(db, path)
            ledger._prepare(readonly)
        except OSError as exc:
            raise cannot_write(path, exc) from None
        except sqlite3.OperationalError as exc:
            if _is_access_problem(exc):
                raise cannot_write(path, exc) from None
            raise _corrupt(path, exc) from None
        except sqlite3.DatabaseError as exc:
            raise _corrupt(path, exc) from None
        return ledger

    def _prepare(self, readonly: bool) -> None:
        db = self._db
        db.execute("PRAGMA busy_timeout = 10000")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema {version} is from a newer seestar-watch")
        if version == 0 and tables:
            raise sqlite3.DatabaseError("not a seestar-watch ledger")
        if readonly:
            if version < 3:  # a daemon not yet upgraded holds it: read it as it is
                self._result = "NULL"
            return
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        if version < SCHEMA_VERSION:
            with self._transaction():
                self._migrate(db, version)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        # for spelled_elsewhere() and claims in the frames' own order: indexes only, which a
        # schema-3 daemon reads as they are
        db.execute("CREATE INDEX IF NOT EXISTS frames_by_time ON frames (mtime_ns, size)")
        db.execute("CREATE INDEX IF NOT EXISTS frames_waiting ON frames (state, mtime_ns)")
        db.execute("CREATE INDEX IF NOT EXISTS frames_by_copy ON frames (archived)")
        problem = db.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {problem}")

    @staticmethod
    def _migrate(db: sqlite3.Connection, version: int) -> None:
        """From `version` (0: a new file) to SCHEMA_VERSION, in the caller's transaction."""
        if version == 0:
            for statement in _SCHEMA.split(";"):  # executescript() would COMMIT early
                if statement.strip():
                    db.execute(statement)
            return
        if version < 2:  # the running command's process group, to stop it after a kill
            db.execute("ALTER TABLE frames ADD COLUMN pid INTEGER")
            db.execute("ALTER TABLE frames ADD COLUMN pid_started REAL")
        if version < 3:  # what the pipeline measured ($SEESTAR_WATCH_RESULT)
            db.execute("ALTER TABLE frames ADD COLUMN result TEXT")
        if version < 4:  # the attempt submitted to a task queue, to wait on after a restart
            db.execute("ALTER TABLE frames ADD COLUMN task TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def keep_trying(
        self, stopping: threading.Event, on_retry: Callable[[], None] = lambda: None
    ) -> None:
        """From now on a write that fails (disk full, I/O error, another process holding the
        write lock, a read-only remount) is tried again every WRITE_RETRY seconds until it
        succeeds, with one log line while it lasts, instead of failing a frame or killing a
        thread; once `stopping` is set, it raises LedgerError with the reason."""
        self._stopping = stopping
        self._on_retry = on_retry  # a thread retrying a write is waiting, not stuck

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction, as keep_trying says when it fails."""
        while True:
            try:
                with self._lock, self._transaction() as db:
                    result = work(db)
            except sqlite3.OperationalError as exc:
                if self._stopping is None:
                    raise
                self._report_trouble(exc)
                self._on_retry()
                if self._stopping.wait(WRITE_RETRY):
                    raise LedgerError(
                        f"the ledger {self.path} could not be written: {exc}"
                        " (the frames not recorded will be run again at the next start)"
                    ) from None
                continue
            if self._trouble_since is not None:
                log.warning(
                    "ledger.writable_again",
                    after_s=round(time.monotonic() - self._trouble_since, 1),
                )
                self._trouble_since = None
            return result

    @property
    def in_trouble(self) -> bool:
        """Whether the last write failed (and is being tried again)."""
        return self._trouble_since is not None

    def _report_trouble(self, exc: sqlite3.OperationalError) -> None:
        if self._trouble_since is not None:
            return
        self._trouble_since = time.monotonic()
        busy = "locked" in str(exc) or "busy" in str(exc)
        log.error(
            "ledger.unwritable",
            ledger=str(self.path),
            reason=str(exc),
            note="another process holds its write lock"
            if busy
            else "disk full, I/O error or read-only: free space or fix the disk",
            effect=f"no new frame is started; writes are tried again every {WRITE_RETRY:g} s",
        )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- what is known -------------------------------------------------------

    def is_new(self) -> bool:
        """True until the first start has taken its baseline."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM meta WHERE key = 'baseline_at'").fetchone()
            return row is None

    def find(self, version: Version) -> tuple[int, str] | None:
        """(id, state) of the row for this version, or None when it was never seen."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, state FROM frames WHERE relpath = ? AND size = ? AND mtime_ns = ?",
                version.key,
            ).fetchone()
            return None if row is None else (int(row[0]), str(row[1]))

    def recorded(self, relpath: str) -> Recorded | None:
        """The newest version recorded at `relpath`, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_RECORDED} FROM frames WHERE relpath = ? ORDER BY id DESC LIMIT 1",
                (os.fsencode(relpath),),
            ).fetchone()
        return None if row is None else _recorded(row)

    def archived_at(self, copy: str) -> bytes | None:
        """The relpath of the frame whose archived copy is `copy`, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT relpath FROM frames WHERE archived = ? ORDER BY id DESC LIMIT 1",
                (os.fsencode(copy),),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def done_since(self, since: float) -> list[Recorded]:
        """Every frame `done` that was first seen at or after `since` (unix time), oldest
        first by its own time: what `process --since` runs again."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RECORDED} FROM frames WHERE state = 'done' AND created_at >= ?"
                " ORDER BY mtime_ns, id",
                (since,),
            ).fetchall()
        return [_recorded(row) for row in rows]

    def latest_state(self, relpath: str) -> str | None:
        """The state of the newest version recorded at `relpath`, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT state FROM frames WHERE relpath = ? ORDER BY id DESC LIMIT 1",
                (os.fsencode(relpath),),
            ).fetchone()
            return None if row is None else str(row[0])

    def knows(self, version: Version) -> bool:
        return self.find(version) is not None

    def spelled_elsewhere(self, version: Version) -> str | None:
        """The path of a frame recorded with this one's file name, size and modification
        time in another folder, or None: the same file seen through a second spelling (a
        link the server follows, a folder name it shows under two names), not a new frame."""
        relpath, size, mtime_ns = version.key
        name = relpath.rpartition(b"/")[2]
        with self._lock:
            rows = self._db.execute(
                "SELECT relpath FROM frames WHERE mtime_ns = ? AND size = ? AND relpath != ?",
                (mtime_ns, size, relpath),
            ).fetchall()
        for (other,) in rows:
            if bytes(other).rpartition(b"/")[2] == name:
                return os.fsdecode(bytes(other))
        return None

    # -- recording -----------------------------------------------------------

    def record_baseline(self, versions: Iterable[Version]) -> int:
        """First start: files already there are `skipped`, not run; returns how many."""
        now = time.time()

        def work(db: sqlite3.Connection) -> int:
            rows = [(*v.key, now, now) for v in versions]
            db.executemany(
                "INSERT OR IGNORE INTO frames (relpath, size, mtime_ns, state, reason,"
                " created_at, updated_at) VALUES (?, ?, ?, 'skipped', 'there before the first"
                " start', ?, ?)",
                rows,
            )
            db.execute("INSERT OR REPLACE INTO meta VALUES ('baseline_at', ?)", (str(now),))
            return len(rows)

        return self._write(work)

    def first_started_at(self) -> float:
        """When seestar-watch first started on this ledger: recorded by the first call, kept."""

        def work(db: sqlite3.Connection) -> float:
            db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('first_started_at', ?)", (repr(time.time()),)
            )
            row = db.execute("SELECT value FROM meta WHERE key = 'first_started_at'").fetchone()
            return float(row[0])

        return self._write(work)

    def mark_started(self) -> None:
        """Later starts run whatever arrived meanwhile: no baseline after the first."""

        def work(db: sqlite3.Connection) -> Any:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('baseline_at', ?)", (str(time.time()),))

        self._write(work)

    def add_pending(self, version: Version, header: dict[str, Any]) -> bool:
        """Queue a settled frame; False when this version is already known."""
        return self._insert(version, "pending", None, header)

    def add_rejected(
        self, version: Version, reason: str, header: dict[str, Any] | None = None
    ) -> bool:
        return self._insert(version, "rejected", reason, header)

    def add_skipped(self, version: Version, reason: str, header: dict[str, Any]) -> bool:
        return self._insert(version, "skipped", reason, header)

    def _insert(
        self, version: Version, state: State, reason: str | None, header: dict[str, Any] | None
    ) -> bool:
        now = time.time()

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT OR IGNORE INTO frames (relpath, size, mtime_ns, state, reason, header,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*version.key, state, reason, _to_json(header), now, now),
            )
            return cursor.rowcount == 1

        return self._write(work)

    def force_pending(self, version: Version, header: dict[str, Any]) -> None:
        """`process --force`: run this version again whatever its state."""
        now = time.time()

        def work(db: sqlite3.Connection) -> Any:
            db.execute(
                "INSERT INTO frames (relpath, size, mtime_ns, state, header, created_at,"
                " updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?)"
                " ON CONFLICT (relpath, size, mtime_ns) DO UPDATE SET state = 'pending',"
                " attempts = 0, not_before = NULL, reason = NULL, header = excluded.header,"
                " updated_at = excluded.updated_at",
                (*version.key, _to_json(header), now, now),
            )

        self._write(work)

    # -- the queue -----------------------------------------------------------

    def set_pid(self, frame_id: int, pid: int, started: float | None) -> None:
        """The command running this frame: its process group and start time."""
        self._update(frame_id, pid=pid, pid_started=started)

    def set_task(self, frame_id: int, task: str) -> None:
        """The task queue holds this attempt under `task` (executor: celery)."""
        self._update(frame_id, task=task)

    def orphans(self) -> list[tuple[str, int, float]]:
        """(frame, pid, start time) of the commands a killed daemon left running."""
        with self._lock:
            rows = self._db.execute(
                "SELECT relpath, pid, pid_started FROM frames WHERE state = 'running'"
                " AND pid IS NOT NULL AND pid_started IS NOT NULL"
            ).fetchall()
        return [(os.fsdecode(bytes(r[0])), int(r[1]), float(r[2])) for r in rows]

    def recover_running(self) -> int:
        """Rows a killed daemon left `running` go back to `pending` (at least once)."""

        def work(db: sqlite3.Connection) -> int:
            # an attempt on the task queue goes on without us: it is claimed again as the
            # same attempt (the same task id), to wait for that task instead of a new one
            return db.execute(
                "UPDATE frames SET state = 'pending', pid = NULL, pid_started = NULL,"
                " attempts = attempts - (task IS NOT NULL AND task LIKE '%-' || attempts),"
                " updated_at = ? WHERE state = 'running'",
                (time.time(),),
            ).rowcount

        return self._write(work)

    def claim_next(self, longest_wait: float = math.inf) -> Frame | None:
        """The oldest pending frame that is due (by its own time: after an outage the night
        runs in the order it was taken, not in listing order), now marked running; None when
        there is none.

        A retry due more than `longest_wait` (the longest retry delay) from now was stored
        before the clock stepped back (NTP correcting a Raspberry Pi without a real-time
        clock): it is due now, not in an hour."""
        now = time.time()
        return self._claim(
            "not_before IS NULL OR not_before <= ? OR not_before > ?", now, now + longest_wait
        )

    def claim(self, frame_id: int) -> Frame | None:
        """This pending frame, now marked running, whether it is due or not."""
        return self._claim("id = ?", frame_id)

    def _claim(self, condition: str, *values: float | int) -> Frame | None:
        now = time.time()

        def work(db: sqlite3.Connection) -> Any:
            row = db.execute(
                "SELECT id, relpath, size, mtime_ns, header, attempts, archived, task FROM frames"
                f" WHERE state = 'pending' AND ({condition}) ORDER BY mtime_ns, id LIMIT 1",
                values,
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE frames SET state = 'running', attempts = attempts + 1, started_at = ?,"
                " updated_at = ? WHERE id = ?",
                (now, now, row[0]),
            )
            return row

        row = self._write(work)
        if row is None:
            return None
        header = json.loads(row[4]) if row[4] else {}
        archived = None if row[6] is None else os.fsdecode(bytes(row[6]))
        return Frame(
            row[0],
            Version(os.fsdecode(bytes(row[1])), row[2], row[3]),
            header,
            row[5] + 1,
            archived,
            row[7],
        )

    def seconds_until_due(
        self, frame_id: int | None = None, longest_wait: float = math.inf
    ) -> float | None:
        """Seconds until the next pending frame (or this one) may run; None if none is pending.
        A due time beyond `longest_wait` from now counts as now (see claim_next)."""
        where = "state = 'pending'" + ("" if frame_id is None else " AND id = ?")
        now = time.time()
        with self._lock:
            row = self._db.execute(
                "SELECT count(*), min(CASE WHEN not_before IS NULL OR not_before > ? THEN 0"
                f" ELSE not_before END) FROM frames WHERE {where}",
                (now + longest_wait,) if frame_id is None else (now + longest_wait, frame_id),
            ).fetchone()
        if not row[0]:
            return None
        return max(0.0, float(row[1]) - now)

    def set_archived(self, frame_id: int, archived: str) -> None:
        self._update(frame_id, archived=os.fsencode(archived))

    def finish(
        self,
        frame_id: int,
        state: State,
        *,
        exit_code: int | None = None,
        duration: float | None = None,
        reason: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        self._update(
            frame_id,
            state=state,
            exit_code=exit_code,
            duration=duration,
            reason=reason,
            not_before=None,
            result=_to_json(result),
        )

    def retry_later(
        self,
        frame_id: int,
        delay: float,
        *,
        exit_code: int | None,
        duration: float | None,
        reason: str,
    ) -> None:
        self._update(
            frame_id,
            state="pending",
            exit_code=exit_code,
            duration=duration,
            reason=reason,
            not_before=time.time() + delay,
        )

    def release(self, frame_id: int) -> None:
        """Shutdown interrupted this run: pending again, and the attempt does not count."""

        def work(db: sqlite3.Connection) -> Any:
            db.execute(
                "UPDATE frames SET state = 'pending', attempts = max(attempts - 1, 0),"
                " updated_at = ? WHERE id = ?",
                (time.time(), frame_id),
            )

        self._write(work)

    def _update(self, frame_id: int, **values: Any) -> None:
        values["updated_at"] = time.time()
        assignments = ", ".join(f"{column} = ?" for column in values)

        def work(db: sqlite3.Connection) -> Any:
            db.execute(
                f"UPDATE frames SET {assignments} WHERE id = ?", (*values.values(), frame_id)
            )

        self._write(work)

    def retry_failed(self, relpaths: Iterable[str] | None = None) -> int:
        """Failed frames (all, or those at `relpaths`) back to pending; returns how many."""
        now = time.time()
        query = (
            "UPDATE frames SET state = 'pending', attempts = 0, not_before = NULL,"
            " updated_at = ? WHERE state = 'failed'"
        )
        with self._lock, self._transaction() as db:
            if relpaths is None:
                return db.execute(query, (now,)).rowcount
            return sum(
                db.execute(query + " AND relpath = ?", (now, os.fsencode(r))).rowcount
                for r in relpaths
            )

    # -- the archive's copies ---------------------------------------------------

    def archive_size(self) -> tuple[int, int]:
        """(copies, bytes) the archive holds, as the ledger knows them."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(*), total(size) FROM (SELECT archived, max(size) AS size"
                " FROM frames WHERE archived IS NOT NULL GROUP BY archived)"
            ).fetchone()
        return int(row[0]), int(row[1])

    def removable_copies(self, limit: int, before: float | None = None) -> list[tuple[str, int]]:
        """(copy, size) of the archived copies only finished frames (done, skipped, rejected)
        use, the oldest first (first seen before `before`, when given): a copy a frame still
        needs (pending, running, failed, waiting for a retry) is never among them."""
        cutoff = "" if before is None else " AND f.created_at < ?"
        with self._lock:
            rows = self._db.execute(
                "SELECT f.archived, max(f.size) FROM frames f WHERE f.archived IS NOT NULL"
                f" AND f.state IN ({_FINISHED}){cutoff} AND NOT EXISTS (SELECT 1 FROM frames g"
                f" WHERE g.archived = f.archived AND g.state NOT IN ({_FINISHED}))"
                " GROUP BY f.archived ORDER BY min(f.created_at) LIMIT ?",
                (limit,) if before is None else (before, limit),
            ).fetchall()
        return [(os.fsdecode(bytes(copy)), int(size)) for copy, size in rows]

    def forget_copy(self, copy: str) -> None:
        """The copy was removed: its frames keep their rows (a done frame never runs again)."""

        def work(db: sqlite3.Connection) -> Any:
            db.execute("UPDATE frames SET archived = NULL WHERE archived = ?", (os.fsencode(copy),))

        self._write(work)

    # -- for the reports (history.py reads through this) ------------------------------

    def pending_count(self) -> int:
        ((count,),) = self.read("SELECT count(*) FROM frames WHERE state = 'pending'")
        return int(count)

    def read(self, query: str, values: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row a read-only query gives, in one go (the connection is shared)."""
        with self._lock:
            return self._db.execute(query, tuple(values)).fetchall()

    @property
    def has_results(self) -> bool:
        """Whether the frames have a result column (an older ledger, read-only, has none)."""
        return self._result == "result"


def _corrupt(path: Path, exc: Exception) -> LedgerError:
    return LedgerError(
        f"the ledger {path} is unreadable or corrupt ({exc}); it is never recreated by"
        " itself: move it aside to start afresh, or restore a backup"
    )


def _is_access_problem(exc: sqlite3.OperationalError) -> bool:
    """SQLite's words for a file or folder it may not open or write (not a damaged file)."""
    message = str(exc).lower()
    return any(
        words in message
        for words in ("unable to open", "readonly", "read-only", "disk i/o error", "permission")
    )


def cannot_write(path: Path, exc: Exception) -> LedgerError:
    """A ledger whose file or folder this user cannot create or write: say which and how."""
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return LedgerError(
        f"cannot write the ledger {path} ({why}); set state.path to a file on a writable"
        f" local disk, or fix the permissions of {path.parent}"
    )


def _to_json(header: dict[str, Any] | None) -> str | None:
    return None if header is None else json.dumps(header, allow_nan=True)


LOW_SPACE = 100_000_000  # bytes free on the ledger's file system below which we warn


def low_space(path: Path) -> str | None:
    """A warning when the ledger's file system is nearly full, else None."""
    folder = path.parent
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if free >= LOW_SPACE:
        return None
    return (
        f"the ledger's file system ({folder}) has {free / 1e6:.0f} MB free, less than"
        f" {LOW_SPACE / 1e6:.0f} MB: when it is full no frame can be recorded (they wait)"
    )
