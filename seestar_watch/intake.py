"""The intake thread: the first start's baseline, the watch kept in step with the share,
and the rescans that make every frame independent of events.

Everything here may block on the share (a listing of a dead server can take minutes),
so it runs on a thread of its own: never on the share supervisor's, which must keep
reporting `share.lost` and `share.restored` whatever a listing does. A step that fails
(a listing, a watch that cannot start) is tried again at the next turn.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from seestar_watch.config import WatcherConfig
from seestar_watch.fitsheader import HeaderRead
from seestar_watch.ledger import Ledger, LedgerError
from seestar_watch.log import Repeats, get_logger
from seestar_watch.record import record, record_gave_up
from seestar_watch.settle import Settle
from seestar_watch.share import ShareSupervisor
from seestar_watch.sources import ShareState, Source, Version
from seestar_watch.sources.bounded import ProbeTimeout, SingleFlight

log = get_logger("seestar_watch.watch")  # the name its log lines have always had

# Frames written while a first start waited for the share are run, not skipped; the
# telescope's clock may be a little off ours: this much earlier still counts as "after".
CLOCK_TOLERANCE = 60.0
UNWATCH_TIMEOUT = 5.0  # seconds a watch may take to stop before it is abandoned
LIST_TIMEOUT = 120.0  # seconds a listing of the whole tree may take (a hung mount: forever)


@dataclass(frozen=True)
class FirstStart:
    """What this start does with the frames already on the share, decided once, when the
    ledger opens: on a ledger seestar-watch never ran on, skip them (the baseline) or run
    them (--process-existing, state.process_existing); on any other, carry on."""

    new_ledger: bool
    run_existing: bool
    asked: bool  # --process-existing on this command line: said when it cannot apply
    started_at: float | None  # when seestar-watch first started on this (new) ledger

    @classmethod
    def decide(cls, ledger: Ledger, *, asked: bool, configured: bool) -> FirstStart:
        new = ledger.is_new()
        return cls(new, asked or configured, asked, ledger.first_started_at() if new else None)


class Intake:
    """The intake thread (see the module's docstring): what it hears and lists of the
    share becomes ledger rows, through `record`."""

    def __init__(
        self,
        options: WatcherConfig,
        source: Source,
        ledger: Ledger,
        share: ShareSupervisor,
        *,
        on_pending: Callable[[], None],
        first_start: FirstStart,
    ) -> None:
        self.options = options  # image_watcher: the only section it reads
        self.source = source
        self.ledger = ledger
        self.share = share
        self.on_pending = on_pending
        self.first_start = first_start
        self._started_at = time.time()
        self.folders = 0  # folders holding frames, at the last scan
        self._wake = threading.Event()
        self._share_came_up = False  # set on the share thread, handled on this one
        self._settle: Settle | None = None
        self._watching = False
        self._baseline_taken = False
        self._checked_subfolders = False
        self._known: set[Version] = set()  # versions the ledger knew at the last rescan
        self._lister = SingleFlight("seestar-watch-list")
        self._lister_stale = False
        self._failures = Repeats()  # scan failures said since the last good scan
        self._frame_failures = Repeats()  # a listed frame that could not be looked up

    # -- told by others (on their threads): flags only ------------------------------------

    def share_up(self, state: ShareState) -> None:
        """The share is there again: catch up at once (a ShareListener)."""
        self._share_came_up = True
        self._wake.set()

    def share_down(self, state: ShareState) -> None:
        self._wake.set()  # stop watching what is no longer there

    def poke(self) -> None:
        """Take a turn now (a stop was asked for)."""
        self._wake.set()

    def run(self, stopping: threading.Event) -> None:
        """Baseline once, keep the watch in step with the share, rescan; never on the share
        thread. A step that fails, whatever it raises, is tried again at the next turn: a
        listing from a guest share can hold anything, and this thread must outlive it."""
        retry = self.options.mount_retry
        next_rescan: float | None = None
        while not stopping.is_set():
            wait = None if next_rescan is None else max(0.0, next_rescan - time.monotonic())
            self._wake.wait(wait)
            self._wake.clear()
            if stopping.is_set():
                break
            try:
                next_rescan = self._turn(next_rescan)
            except LedgerError:
                break  # raised only once stopping, with the ledger unwritable
            except Exception as exc:
                self._scan_failed(exc)
                next_rescan = time.monotonic() + retry
        self.stop_watching()

    def _turn(self, next_rescan: float | None) -> float | None:
        """One turn of the intake: when the next rescan is due (None: at the next wake)."""
        if not self.share.available:
            self.stop_watching()
            return None
        came_up, self._share_came_up = self._share_came_up, False
        self._lister_stale = self._lister_stale or came_up
        if not self._take_baseline() or not self._start_watching():
            return time.monotonic() + self.options.mount_retry  # tried again soon
        due = next_rescan is not None and time.monotonic() >= next_rescan
        if came_up or due or next_rescan is None:
            self._catch_up()
            interval = self.options.rescan_interval
            return time.monotonic() + interval if interval else None
        return next_rescan

    def _scan_failed(self, exc: Exception) -> None:
        """Said once per kind until a scan succeeds again; the share is looked at at once
        (an error may be the first sign of a share going away)."""
        if self._failures.first(exc):
            if isinstance(exc, OSError):
                log.warning("scan.failed", path=self.source.location, error=str(exc))
            else:  # not the share's usual trouble: what it was goes in the log
                log.error(
                    "scan.failed",
                    path=self.source.location,
                    error=f"{type(exc).__name__}: {exc}",
                    exc_info=True,
                )
        self.share.poke()

    def _scan_succeeded(self) -> None:
        if self._failures.clear():
            log.info("scan.recovered", path=self.source.location)

    def _listing(self) -> list[Version]:
        """The source's listing, on a helper thread and bounded: a listing stuck on a hung
        mount must not hold this thread when the share comes back. Raises OSError. Once the
        share came back, a stuck listing is left behind (one thread per real outage) and
        the next one starts afresh."""
        if self._lister_stale:
            self._lister, self._lister_stale = SingleFlight("seestar-watch-list"), False
        try:
            return self._lister.call(lambda: list(self.source.list_frames()), LIST_TIMEOUT)
        except ProbeTimeout:
            raise OSError(errno.ETIMEDOUT, f"no listing within {LIST_TIMEOUT:g} s") from None

    def _take_baseline(self) -> bool:
        if self._baseline_taken:
            return True
        try:
            self.baseline_or_continue()
        except LedgerError:
            raise
        except Exception as exc:
            self._scan_failed(exc)
            return False
        self._baseline_taken = True
        return True

    def _start_watching(self) -> bool:
        if self._watching:
            return True
        if self._settle is None:
            self._settle = Settle(
                self.source,
                self.options.debounce_delay,
                incomplete_timeout=self.options.incomplete_timeout,
                on_settled=self._settled,
                on_gave_up=lambda gave_up: record_gave_up(self.ledger, self.source, gave_up),
            )
            self._settle.start()
        # a fresh watch each time the share comes back: native watches die with an
        # unmount (watchdog #420)
        self._watching = self.source.watch(self._settle.touch)
        return self._watching

    def stop_watching(self) -> None:
        """Stop the watch, on a helper thread: stopping watchdog's observer joins its emitter
        threads with no timeout, and on a hung mount that is for good. A watch that does not
        stop in time is abandoned (a fresh one starts when the share answers again)."""
        if not self._watching:
            return
        self._watching = False
        helper = threading.Thread(
            target=self.source.unwatch,
            args=(UNWATCH_TIMEOUT,),
            name="seestar-watch-unwatch",
            daemon=True,
        )
        helper.start()
        helper.join(UNWATCH_TIMEOUT + 1.0)
        if helper.is_alive():
            log.warning(
                "watcher.abandoned",
                path=self.source.location,
                note="the old watch is stuck on the share; a new one starts when it answers",
            )

    def _settled(self, entry: Version, header: HeaderRead) -> None:
        try:
            recorded = record(
                self.ledger,
                self.source,
                entry,
                header,
                max_frame_mb=self.options.max_frame_mb,
            )
        except LedgerError:
            return  # stopping while the ledger cannot be written: the next start lists it again
        except Exception:  # this frame's problem, not the night's: the others go on
            log.exception("frame.not_recorded", frame=entry.relpath)
            return
        if recorded == "pending":
            self.on_pending()

    def baseline_or_continue(self) -> None:
        """First start: what was there when seestar-watch first started is `skipped`."""
        if not self.first_start.new_ledger:
            if self.first_start.asked:
                log.warning(
                    "ledger.process_existing_ignored",
                    ledger=str(self.ledger.path),
                    note="--process-existing applies to a first start only (an empty ledger);"
                    " `seestar-watch process FRAME...` runs frames that were skipped",
                )
            return
        if self.first_start.run_existing:
            self.ledger.mark_started()
            log.info("ledger.first_start", existing="processed")
            return
        entries = self._listing()
        before = self._baseline_cutoff_ns()
        skipped = [e for e in entries if before is None or e.mtime_ns < before]
        count = self.ledger.record_baseline(skipped)
        log.info(
            "ledger.baseline",
            skipped=count,
            run=len(entries) - count,
            note="frames already there are recorded as skipped, not run"
            " (use --process-existing to run them)",
        )

    def _baseline_cutoff_ns(self) -> int | None:
        """None: everything listed now was there at the first start (the share answered
        then). Otherwise the first start waited for the share: only frames older than that
        start (less the clock tolerance) were there; the rest arrived meanwhile and run."""
        first = self.first_start.started_at
        waited = self.share.waited or (first is not None and first < self._started_at - 1.0)
        if first is None or not waited:
            return None
        return int((first - CLOCK_TOLERANCE) * 1e9)

    def warn_if_frames_unwatched(self) -> None:
        """recursive: false with frames in sub-folders (where the Seestar writes them): say so."""
        if self.options.recursive or self._checked_subfolders:
            return
        self._checked_subfolders = True
        try:
            folders = self.source.folders_with_frames()
        except OSError:
            return
        if folders:
            log.warning(
                "watch.subfolders_not_watched",
                folders=len(folders),
                example=folders[0],
                fix="set image_watcher.recursive: true (the Seestar writes into"
                " MyWorks/<target>_sub/)",
            )

    def _catch_up(self) -> None:
        """Feed whatever the ledger has not seen to settle: nothing depends on an event."""
        self.warn_if_frames_unwatched()
        started, seen, new, folders = time.monotonic(), 0, 0, set()
        known: set[Version] = set()
        try:
            entries = self._listing()
        except LedgerError:
            raise
        except Exception as exc:
            self._scan_failed(exc)
            return
        self._scan_succeeded()
        # the oldest first: frames that waited (an outage, a restart) settle, and so run, in
        # the order they were taken, not in the order the server lists them
        for entry in sorted(entries, key=lambda e: e.mtime_ns):
            seen += 1
            folders.add(entry.relpath.rpartition("/")[0])
            try:
                new += self._notice(entry, known)
            except LedgerError:
                raise
            except Exception as exc:  # this frame's problem: the rest of the listing goes on
                if self._frame_failures.first(exc):
                    log.exception("frame.not_noticed", frame=entry.relpath)
        self._known = known
        self.folders = len(folders)  # for the STATUS line systemd shows
        log.debug(
            "scan.finished", frames=seen, new=new, duration_s=round(time.monotonic() - started, 3)
        )

    def _notice(self, version: Version, known: set[Version]) -> int:
        """Hand a listed frame the ledger does not know to settle (1), or remember it (0)."""
        # a version the ledger knew at the last rescan still is (rows are never
        # removed): the ledger is asked only about what changed since
        if version in self._known or self.ledger.knows(version):
            known.add(version)
            return 0
        if self._settle is None:
            return 0
        self._settle.notice(version.relpath)  # a frame being written keeps its deadline
        return 1

    def stop(self) -> None:
        if self._settle is not None:
            self._settle.stop(timeout=5.0)
