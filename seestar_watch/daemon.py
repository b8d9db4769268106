"""`seestar-watch run`: the parts wired together, and their ordered start and stop.

    config -> ledger (held alone) -> source -> settle -> intake -> ledger
           -> workers: processor (archive copy -> pipeline -> ledger)

Three kinds of thread, each with one job:
- share: asks the source whether it is there (bounded) and only sets flags;
- intake: everything that touches the share besides the workers: the first start's
  baseline, starting and stopping the watch, rescans (a hung listing holds this
  thread, never share supervision);
- workers: claim pending frames from the ledger (the only queue) and process them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from seestar_watch import intake
from seestar_watch.config import Config
from seestar_watch.errors import UserError
from seestar_watch.fitsheader import HeaderRead
from seestar_watch.ledger import Frame, Ledger
from seestar_watch.lifecycle import Lifecycle
from seestar_watch.log import count_of, get_logger
from seestar_watch.notify import Notifier
from seestar_watch.pipeline import TERM_GRACE
from seestar_watch.processor import FrameProcessor
from seestar_watch.settle import Settle
from seestar_watch.share import ShareSupervisor
from seestar_watch.sources import Entry, ShareState, open_source

log = get_logger("seestar_watch.daemon")

LEDGER_POLL = 2.0  # workers look at the ledger at least this often (`retry` from outside)
STATUS_EVERY = 5.0  # seconds between two STATUS= lines to systemd
# Frames written while a first start waited for the share are run, not skipped; the
# telescope's clock may be a little off ours: this much earlier still counts as "after".
CLOCK_TOLERANCE = 60.0


class Daemon:
    def __init__(
        self, config: Config, *, process_existing: bool = False, wait_for_share: bool = True
    ) -> None:
        self.config = config
        self.process_existing = process_existing or config.state.process_existing
        self._asked_to_process_existing = process_existing  # on the command line, this time
        self.wait_for_share = wait_for_share
        self.source = open_source(config.image_watcher)
        self.lifecycle = Lifecycle(config.pipeline.shutdown_grace)
        self.failed = 0  # frames that ended `failed` during this run
        self._failed_lock = threading.Lock()
        self.folders = 0  # folders holding frames, at the last scan
        self.last_frame = ""  # "<name> <state>" of the last frame a worker finished
        self.share = ShareSupervisor(
            self.source,
            config.image_watcher.mount_retry,
            self.lifecycle.stopping,
            self._share_up,
            self._share_down,
        )
        self._work = threading.Condition()
        self._intake_wake = threading.Event()
        self._share_came_up = False  # set by the share thread, handled by the intake thread
        self._settle: Settle | None = None
        self._watching = False
        self._baseline_taken = False
        self._checked_subfolders = False
        self._started_at = time.time()
        self._first_start: float | None = None  # when seestar-watch first ran on this ledger
        self.lifecycle.on_stop(self._wake_everyone)

    # -- run -------------------------------------------------------------------

    def run(self, *, once: bool = False) -> int:
        if not self.config.image_watcher.enabled:
            raise UserError(
                f"image_watcher.enabled is false in {self.config.source}: nothing to watch"
                " (set it to true to run)"
            )
        with (
            self.lifecycle.handling_signals(),
            Ledger.exclusive(self.config.state.ledger) as ledger,
        ):
            recovered = ledger.recover_running()
            if recovered:
                log.warning(
                    "ledger.recovered",
                    frames=recovered,
                    note="left running by a daemon that did not stop cleanly",
                )
            if ledger.is_new():
                self._first_start = ledger.first_started_at()
            if once or not self.wait_for_share:
                self._require_share()
            if once:
                self._baseline_or_continue(ledger)
                return self._run_once(ledger)
            self._run_forever(ledger)
        return 0

    def _require_share(self) -> None:
        state = self.share.check()
        if not state.is_available:
            raise UserError(
                f"the share is not available: {state.reason}; `seestar-watch check-mount`"
                " says how to mount it (or run without --no-wait to wait for it)"
            )

    def _run_forever(self, ledger: Ledger) -> None:
        processor = self._processor(ledger)
        threads = [
            self._thread("share", self.share.run),
            self._thread("intake", self._intake_loop, ledger),
        ]
        threads += [
            self._thread(f"worker-{n}", self._work_loop, ledger, processor)
            for n in range(1, self.config.pipeline.workers + 1)
        ]
        log.info(
            "daemon.started",
            watch_path=self.source.location,
            workers=self.config.pipeline.workers,
            ledger=str(ledger.path),
        )
        notifier = Notifier()
        notifier.ready(self.status_line(ledger))  # up, even while still waiting for the share
        next_status = time.monotonic() + STATUS_EVERY
        while not self.lifecycle.wait(1.0):
            notifier.watchdog()  # from this loop only: if it stops turning, systemd restarts us
            if time.monotonic() >= next_status:
                notifier.status(self.status_line(ledger))
                next_status = time.monotonic() + STATUS_EVERY
        notifier.stopping("stopping: letting a running command finish")
        self._shutdown(threads)

    def _processor(self, ledger: Ledger) -> FrameProcessor:
        return FrameProcessor(
            self.config, ledger, self.source, self.lifecycle.should_abort, self.share_answers
        )

    def status_line(self, ledger: Ledger) -> str:
        """What the daemon is doing, in one line (systemctl status shows it)."""
        state = self.share.state
        if state is None or not state.is_available:
            doing = "waiting for the share" + (f": {state.reason}" if state else "")
        else:
            doing = f"watching {self.source.location} ({count_of(self.folders, 'folder')})"
        last = f"; last frame {self.last_frame}" if self.last_frame else ""
        return f"{doing}; {ledger.pending_count()} pending{last}"

    def share_answers(self) -> bool:
        """A fresh, bounded look: is the share there right now?"""
        answers = self.share.check().is_available
        if not answers:
            self.share.poke()
        return answers

    def _shutdown(self, threads: list[threading.Thread]) -> None:
        log.info(
            "daemon.stopping",
            grace_s=self.config.pipeline.shutdown_grace,
            note="a running command may finish; a second Ctrl-C (or SIGTERM) stops at once",
        )
        # 1. no new events or settles; 2. no new work (workers see the stop flag);
        # 3. a running command gets the grace, then its group is stopped.
        self._wake_everyone()
        limit = time.monotonic() + self.config.pipeline.shutdown_grace + TERM_GRACE + 5.0
        for thread in threads:
            thread.join(max(0.1, limit - time.monotonic()))
        if self._settle is not None:
            self._settle.stop(timeout=5.0)
        stuck = [t.name for t in threads if t.is_alive()]
        log.info("daemon.stopped", stuck_threads=stuck or None)

    def _wake_everyone(self) -> None:
        self._intake_wake.set()
        with self._work:
            self._work.notify_all()

    def _thread(self, name: str, target: Any, *args: Any) -> threading.Thread:
        thread = threading.Thread(
            target=target, args=args, name=f"seestar-watch-{name}", daemon=True
        )
        thread.start()
        return thread

    # -- the share thread: flags only --------------------------------------------

    def _share_up(self, state: ShareState) -> None:
        self._share_came_up = True
        self._wake_everyone()

    def _share_down(self, state: ShareState) -> None:
        self._intake_wake.set()

    # -- the intake thread ---------------------------------------------------------

    def _intake_loop(self, ledger: Ledger) -> None:
        """Baseline once, keep the watch in step with the share, rescan; never on the share
        thread, and a failed step is tried again at the next turn."""
        interval = self.config.image_watcher.rescan_interval
        retry = self.config.image_watcher.mount_retry
        next_rescan: float | None = None
        while not self.lifecycle.stopping.is_set():
            wait = None if next_rescan is None else max(0.0, next_rescan - time.monotonic())
            self._intake_wake.wait(wait)
            self._intake_wake.clear()
            if self.lifecycle.stopping.is_set():
                break
            if not self.share.available:
                self._stop_watching()
                next_rescan = None
                continue
            came_up, self._share_came_up = self._share_came_up, False
            if not self._take_baseline(ledger) or not self._start_watching(ledger):
                next_rescan = time.monotonic() + retry  # tried again soon
                continue
            due = next_rescan is not None and time.monotonic() >= next_rescan
            if came_up or due or next_rescan is None:
                self._catch_up(ledger)
                next_rescan = time.monotonic() + interval if interval else None
        self._stop_watching()

    def _take_baseline(self, ledger: Ledger) -> bool:
        if self._baseline_taken:
            return True
        try:
            self._baseline_or_continue(ledger)
        except OSError as exc:
            log.warning("scan.failed", path=self.source.location, error=str(exc))
            self.share.poke()
            return False
        self._baseline_taken = True
        return True

    def _start_watching(self, ledger: Ledger) -> bool:
        if self._watching:
            return True
        if self._settle is None:
            options = self.config.image_watcher
            self._settle = Settle(
                self.source,
                options.debounce_delay,
                incomplete_timeout=options.incomplete_timeout,
                on_settled=lambda entry, header: self._settled(ledger, entry, header),
                on_gave_up=lambda gave_up: intake.record_gave_up(ledger, self.source, gave_up),
            )
            self._settle.start()
        # a fresh watch each time the share comes back: native watches die with an
        # unmount (watchdog #420)
        self._watching = self.source.watch(self._settle.touch)
        return self._watching

    def _stop_watching(self) -> None:
        if self._watching:
            self._watching = False
            self.source.unwatch(5.0)

    def _settled(self, ledger: Ledger, entry: Entry, header: HeaderRead) -> None:
        if intake.record(ledger, self.source, entry, header) == "pending":
            with self._work:
                self._work.notify()

    def _baseline_or_continue(self, ledger: Ledger) -> None:
        """First start: what was there when seestar-watch first started is `skipped`."""
        if not ledger.is_new():
            if self._asked_to_process_existing:
                log.warning(
                    "ledger.process_existing_ignored",
                    ledger=str(ledger.path),
                    note="--process-existing applies to a first start only (an empty ledger);"
                    " `seestar-watch process PATH...` runs frames that were skipped",
                )
            return
        if self.process_existing:
            ledger.mark_started()
            log.info("ledger.first_start", existing="processed")
            return
        entries = list(self.source.list_frames())
        before = self._baseline_cutoff_ns()
        skipped = [e.version for e in entries if before is None or e.mtime_ns < before]
        count = ledger.record_baseline(skipped)
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
        first = self._first_start
        waited = self.share.waited or (first is not None and first < self._started_at - 1.0)
        if first is None or not waited:
            return None
        return int((first - CLOCK_TOLERANCE) * 1e9)

    def _warn_if_frames_unwatched(self) -> None:
        """recursive: false with frames in sub-folders (where the Seestar writes them): say so."""
        if self.config.image_watcher.recursive or self._checked_subfolders:
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

    def _catch_up(self, ledger: Ledger) -> None:
        """Feed whatever the ledger has not seen to settle: nothing depends on an event."""
        self._warn_if_frames_unwatched()
        settle = self._settle
        started, seen, new, folders = time.monotonic(), 0, 0, set()
        try:
            for entry in self.source.list_frames():
                seen += 1
                folders.add(entry.relpath.rpartition("/")[0])
                if settle is not None and not ledger.knows(entry.version):
                    settle.touch(entry.relpath)
                    new += 1
        except OSError as exc:
            log.warning("scan.failed", path=self.source.location, error=str(exc))
            self.share.poke()
            return
        self.folders = len(folders)  # for the STATUS line systemd shows
        log.debug(
            "scan.finished", frames=seen, new=new, duration_s=round(time.monotonic() - started, 3)
        )

    # -- the workers ---------------------------------------------------------------

    def _work_loop(self, ledger: Ledger, processor: FrameProcessor) -> None:
        while not self.lifecycle.stopping.is_set():
            frame = ledger.claim_next() if self.share.available else None
            if frame is None:
                due = ledger.seconds_until_due()
                with self._work:
                    self._work.wait(LEDGER_POLL if due is None else min(due, LEDGER_POLL))
                continue
            self._process(processor, frame)

    def _process(self, processor: FrameProcessor, frame: Frame) -> str:
        state = processor.process(frame)
        if state == "failed":
            with self._failed_lock:  # workers finish frames at the same time
                self.failed += 1
        self.last_frame = f"{frame.version.name.rpartition('/')[2]} {state}"
        return state

    # -- run --once ------------------------------------------------------------------

    def _run_once(self, ledger: Ledger) -> int:
        """Catch up, run everything pending (waiting out retry delays), then return."""
        self._warn_if_frames_unwatched()
        for entry in self.source.list_frames():
            if not ledger.knows(entry.version):
                intake.read_and_record(ledger, self.source, entry.relpath)
        processor = self._processor(ledger)
        while not self.lifecycle.stopping.is_set():
            frame = ledger.claim_next()
            if frame is not None:
                if self._process(processor, frame) == "postponed":
                    raise UserError("the share went away; the frames left are still pending")
                continue
            due = ledger.seconds_until_due()
            if due is None:
                break
            self.lifecycle.wait(due)
        counts = ledger.counts()
        log.info("daemon.once_finished", failed_this_run=self.failed, **counts)
        return 1 if self.failed else 0
