"""`seestar-watch run`: the parts wired together, and their ordered start and stop.

    config -> logging -> ledger (single-instance lock) -> baseline or catch-up
           -> watcher (events) + rescans -> settle -> ledger -> workers
           (archive copy -> pipeline -> ledger) -> graceful stop

Signal handlers only set flags; every wait is on the stop Event, so shutdown
interrupts it. The ledger is the only queue: a frame is recorded `pending`
when it settles and a worker claims it from there.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from seestar_watch.config import Config
from seestar_watch.errors import UserError
from seestar_watch.fitsheader import HeaderRead, Status, read_header
from seestar_watch.ledger import InstanceLock, Ledger, Version
from seestar_watch.log import count_of
from seestar_watch.notify import Notifier
from seestar_watch.pipeline import TERM_GRACE
from seestar_watch.scan import folders_with_frames, frame_filter, list_frames, version_of
from seestar_watch.share import ShareSupervisor
from seestar_watch.watcher import ImageWatcher
from seestar_watch.worker import FrameProcessor

log = structlog.get_logger("seestar_watch.daemon")

LEDGER_POLL = 2.0  # workers look at the ledger at least this often (`retry` from outside)
STATUS_EVERY = 5.0  # seconds between two STATUS= lines to systemd


@contextmanager
def locked_ledger(config: Config) -> Iterator[Ledger]:
    """The ledger, held by this process alone (a second daemon exits 1)."""
    lock = InstanceLock(config.state.ledger)
    lock.acquire()
    try:
        ledger = Ledger.open(config.state.ledger)
        try:
            yield ledger
        finally:
            ledger.close()
    finally:
        lock.release()


class _LedgerWatcher(ImageWatcher):
    """The ImageWatcher whose settled frames go into the ledger instead of a callback."""

    def __init__(self, daemon: Daemon, ledger: Ledger, **options: Any) -> None:
        super().__init__(daemon.root, lambda event: None, **options)
        self._daemon = daemon
        self._ledger = ledger

    def on_settled(self, path: str, header: HeaderRead) -> bool:
        if header.identity is None:
            return False
        _, _, size, mtime_ns = header.identity
        version = version_of(self._daemon.root, path, size, mtime_ns)
        self._daemon.record(self._ledger, version, header)
        return True

    def on_gave_up(self, path: str, status: Status, reason: str, waited: float) -> None:
        if status is Status.UNAVAILABLE:
            log.warning("frame.unreadable", path=path, reason=reason)  # the share, not the frame
            return
        try:
            info = os.lstat(path)
        except OSError:
            return
        version = version_of(self._daemon.root, path, info.st_size, info.st_mtime_ns)
        why = f"incomplete: {reason} after waiting {waited:.0f} s"
        if self._ledger.add_rejected(version, why):
            log.warning("frame.rejected", path=path, reason=why)


class Daemon:
    def __init__(
        self, config: Config, *, process_existing: bool = False, wait_for_share: bool = True
    ) -> None:
        self.config = config
        self.process_existing = process_existing or config.state.process_existing
        self._asked_to_process_existing = process_existing  # on the command line, this time
        self.wait_for_share = wait_for_share
        self.root = str(config.image_watcher.watch_path.absolute())
        self.failed = 0  # frames that ended `failed` during this run
        self._failed_lock = threading.Lock()
        self.folders = 0  # folders holding frames, at the last scan
        self.last_frame = ""  # "<name> <state>" of the last frame a worker finished
        self._wanted = frame_filter(config.image_watcher.ignore)
        self._stop = threading.Event()
        self._force = threading.Event()
        self._stopping_since: float | None = None
        self._work = threading.Condition()
        self._rescan_now = threading.Event()
        self.share = ShareSupervisor(
            config.image_watcher, self._stop, self._share_up, self._share_down
        )
        self._watcher: ImageWatcher | None = None
        self._ledger: Ledger | None = None
        self._started = False  # baseline taken (or not needed) since the share first appeared
        self._checked_subfolders = False

    # -- control -------------------------------------------------------------

    def request_stop(self, *, force: bool = False) -> None:
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
        self._stop.set()
        self._rescan_now.set()
        if force:
            self._force.set()

    def wait_stop(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True as soon as a stop is requested."""
        return self._stop.wait(seconds)

    def should_abort(self) -> bool:
        """A running command is stopped on a forced stop, or once the shutdown grace is over."""
        if self._force.is_set():
            return True
        since = self._stopping_since
        return since is not None and time.monotonic() - since >= self.config.pipeline.shutdown_grace

    @contextmanager
    def handling_signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT request a graceful stop; a second one forces it."""

        def handle(signum: int, _: Any) -> None:
            # only flags here; the second Ctrl-C (or TERM) forces
            self.request_stop(force=self._stop.is_set())

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- run -----------------------------------------------------------------

    def run(self, *, once: bool = False) -> int:
        watcher_config = self.config.image_watcher
        if not watcher_config.enabled:
            raise UserError(
                f"image_watcher.enabled is false in {self.config.source}: nothing to watch"
                " (set it to true to run)"
            )
        with self.handling_signals(), locked_ledger(self.config) as ledger:
            recovered = ledger.recover_running()
            if recovered:
                log.warning(
                    "ledger.recovered",
                    frames=recovered,
                    note="left running by a daemon that did not stop cleanly",
                )
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

    def _baseline_or_continue(self, ledger: Ledger) -> None:
        """First start: record what is there as skipped (or process it). Raises OSError."""
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
        versions = [
            version_of(self.root, path, info.st_size, info.st_mtime_ns)
            for path, info in self._list()
        ]
        count = ledger.record_baseline(versions)
        log.info(
            "ledger.baseline",
            skipped=count,
            note="frames already there are recorded as skipped, not run"
            " (use --process-existing to run them)",
        )

    def _list(self) -> Iterator[tuple[str, os.stat_result]]:
        return list_frames(
            self.root, recursive=self.config.image_watcher.recursive, wanted=self._wanted
        )

    def _run_forever(self, ledger: Ledger) -> None:
        self._ledger = ledger
        threads = [self._thread("share", self.share.run), self._thread("rescan", self._rescan_loop)]
        processor = FrameProcessor(self.config, ledger, self.should_abort, self.share_answers)
        threads += [
            self._thread(f"worker-{n}", self._work_loop, ledger, processor)
            for n in range(1, self.config.pipeline.workers + 1)
        ]
        log.info(
            "daemon.started",
            watch_path=self.root,
            workers=self.config.pipeline.workers,
            ledger=str(ledger.path),
        )
        notifier = Notifier()
        notifier.ready(self.status_line(ledger))  # up, even while still waiting for the share
        next_status = time.monotonic() + STATUS_EVERY
        while not self._stop.wait(1.0):
            notifier.watchdog()  # from this loop only: if it stops turning, systemd restarts us
            if time.monotonic() >= next_status:
                notifier.status(self.status_line(ledger))
                next_status = time.monotonic() + STATUS_EVERY
        notifier.stopping("stopping: letting a running command finish")
        self._shutdown(threads)

    def status_line(self, ledger: Ledger) -> str:
        """What the daemon is doing, in one line (systemctl status shows it)."""
        state = self.share.state
        if state is None or not state.is_available:
            doing = "waiting for the share" + (f": {state.reason}" if state else "")
        else:
            doing = f"watching {self.root} ({count_of(self.folders, 'folder')})"
        last = f"; last frame {self.last_frame}" if self.last_frame else ""
        return f"{doing}; {ledger.pending_count()} pending{last}"

    def share_answers(self) -> bool:
        """A fresh, bounded look: is the share there right now?"""
        answers = self.share.check().is_available
        if not answers:
            self.share.poke()
        return answers

    def _share_up(self, state: Any) -> None:
        """On the share thread: the share (re)appeared. Baseline once, then watch and rescan."""
        assert self._ledger is not None
        if not self._started:
            try:
                self._baseline_or_continue(self._ledger)
            except OSError as exc:
                log.warning("scan.failed", path=self.root, error=str(exc))
                self.share.poke()
                return
            self._started = True
        options = self.config.image_watcher
        watcher = _LedgerWatcher(
            self,
            self._ledger,
            debounce_delay=options.debounce_delay,
            recursive=options.recursive,
            observer=options.observer,
            poll_interval=options.poll_interval,
            incomplete_timeout=options.incomplete_timeout,
            ignore=options.ignore,
        )
        if watcher.start():  # a fresh watch: native watches die with an unmount (watchdog #420)
            self._watcher = watcher
        self._rescan_now.set()
        with self._work:
            self._work.notify_all()

    def _share_down(self, state: Any) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop(timeout=5.0)

    def _shutdown(self, threads: list[threading.Thread]) -> None:
        log.info(
            "daemon.stopping",
            grace_s=self.config.pipeline.shutdown_grace,
            note="a running command may finish; a second Ctrl-C (or SIGTERM) stops at once",
        )
        # 1. no new events or settles; 2. no new work (workers see the stop flag);
        # 3. a running command gets the grace, then its group is stopped.
        self._share_down(None)
        with self._work:
            self._work.notify_all()
        limit = time.monotonic() + self.config.pipeline.shutdown_grace + TERM_GRACE + 5.0
        for thread in threads:
            thread.join(max(0.1, limit - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        log.info("daemon.stopped", stuck_threads=stuck or None)

    def _thread(self, name: str, target: Any, *args: Any) -> threading.Thread:
        thread = threading.Thread(
            target=target, args=args, name=f"seestar-watch-{name}", daemon=True
        )
        thread.start()
        return thread

    # -- the parts' loops ----------------------------------------------------

    def record(self, ledger: Ledger, version: Version, header: HeaderRead) -> None:
        """A settled version goes into the ledger: pending, or rejected with its reason."""
        path = os.fsdecode(version.relpath)
        if header.status is Status.INVALID:
            if ledger.add_rejected(version, header.reason):
                log.warning("frame.rejected", frame=path, reason=header.reason)
            return
        if ledger.add_pending(version, header.cards):
            log.info("frame.settled", frame=path, size_kb=round(version.size / 1024, 1))
            with self._work:
                self._work.notify()

    def _rescan_loop(self) -> None:
        interval = self.config.image_watcher.rescan_interval
        while not self._stop.is_set():
            self._rescan_now.wait(interval or None)
            self._rescan_now.clear()
            watcher = self._watcher
            if watcher is not None and self.share.available and not self._stop.is_set():
                assert self._ledger is not None
                self._catch_up(self._ledger, watcher)

    def _warn_if_frames_unwatched(self) -> None:
        """recursive: false with frames in sub-folders (where the Seestar writes them): say so."""
        if self.config.image_watcher.recursive or self._checked_subfolders:
            return
        self._checked_subfolders = True
        try:
            folders = folders_with_frames(self.root, self._wanted)
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

    def _catch_up(self, ledger: Ledger, watcher: ImageWatcher) -> None:
        self._warn_if_frames_unwatched()
        started, seen, new, folders = time.monotonic(), 0, 0, set()
        try:
            for path, info in self._list():
                seen += 1
                folders.add(os.path.dirname(path))
                if not ledger.knows(version_of(self.root, path, info.st_size, info.st_mtime_ns)):
                    watcher.notice(path)
                    new += 1
        except OSError as exc:
            log.warning("scan.failed", path=self.root, error=str(exc))
            self.share.poke()
            return
        self.folders = len(folders)  # for the STATUS line systemd shows
        log.debug(
            "scan.finished", frames=seen, new=new, duration_s=round(time.monotonic() - started, 3)
        )

    def _work_loop(self, ledger: Ledger, processor: FrameProcessor) -> None:
        while not self._stop.is_set():
            frame = ledger.claim_next() if self.share.available else None
            if frame is None:
                due = ledger.seconds_until_due()
                with self._work:
                    self._work.wait(LEDGER_POLL if due is None else min(due, LEDGER_POLL))
                continue
            self._process(processor, frame)

    def _process(self, processor: FrameProcessor, frame: Any) -> str:
        try:
            state = processor.process(frame)
        except Exception as exc:  # a bug: keep the frame (failed, retryable) and keep going
            log.exception("worker.crashed", frame=os.fsdecode(frame.version.relpath))
            processor.ledger.finish(frame.id, "failed", reason=f"internal error: {exc!r}")
            state = "failed"
        if state == "failed":
            with self._failed_lock:  # workers finish frames at the same time
                self.failed += 1
        self.last_frame = f"{os.path.basename(os.fsdecode(frame.version.relpath))} {state}"
        return state

    # -- run --once ----------------------------------------------------------

    def _run_once(self, ledger: Ledger) -> int:
        """Catch up, run everything pending (waiting out retry delays), then return."""
        self._warn_if_frames_unwatched()
        for path, info in self._list():
            version = version_of(self.root, path, info.st_size, info.st_mtime_ns)
            if ledger.knows(version):
                continue
            header = read_header(path)
            if header.status in (Status.COMPLETE, Status.INVALID) and header.identity:
                self.record(ledger, version_of(self.root, path, *header.identity[2:]), header)
            elif header.status is Status.INCOMPLETE:
                log.info("frame.incomplete", frame=path, reason=header.reason, note="next run")
        processor = FrameProcessor(self.config, ledger, self.should_abort, self.share_answers)
        while not self._stop.is_set():
            frame = ledger.claim_next()
            if frame is not None:
                if self._process(processor, frame) == "postponed":
                    raise UserError("the share went away; the frames left are still pending")
                continue
            due = ledger.seconds_until_due()
            if due is None:
                break
            self._stop.wait(due)
        counts = ledger.counts()
        log.info("daemon.once_finished", failed_this_run=self.failed, **counts)
        return 1 if self.failed else 0
