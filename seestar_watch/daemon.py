"""`seestar-watch run`: the parts wired together, and their ordered start and stop.

    config -> ledger (held alone) -> source -> settle -> intake -> ledger
           -> workers: processor (archive copy -> pipeline -> ledger)
    ledger (read-only) -> dashboard (its own threads; off with dashboard.listen: off)
    share, intake, workers -> alert rules -> (main loop, each second) -> alert sender

Three kinds of thread, each with one job:
- share: asks the source whether it is there (bounded) and only sets flags;
- intake: everything that touches the share besides the workers: the first start's
  baseline, starting and stopping the watch, rescans (a hung listing holds this
  thread, never share supervision);
- workers: claim pending frames from the ledger (the only queue) and process them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from seestar_watch import children, preflight, report
from seestar_watch import share as share_module
from seestar_watch.alerts import AlertRules, NoAlerts, night_figures
from seestar_watch.config import Config, SmbUrl
from seestar_watch.dashboard import overview
from seestar_watch.errors import UserError
from seestar_watch.history import History
from seestar_watch.intake import FirstStart, Intake
from seestar_watch.ledger import Frame, Ledger, LedgerError, low_space
from seestar_watch.lifecycle import Lifecycle, private_files
from seestar_watch.log import count_of, get_logger
from seestar_watch.notify import Notifier
from seestar_watch.pipeline import TERM_GRACE
from seestar_watch.processor import FrameProcessor
from seestar_watch.record import read_and_record
from seestar_watch.share import ShareSupervisor
from seestar_watch.sources import open_source
from seestar_watch.worker import Wakeup, Worker, prepare_ledger

if TYPE_CHECKING:  # imported when used: prometheus-client and apprise only if configured
    from seestar_watch.alertsender import AlertSender
    from seestar_watch.dashboard.server import Dashboard

log = get_logger("seestar_watch.daemon")

LEDGER_POLL = 2.0  # workers look at the ledger at least this often (`retry` from outside)
STATUS_EVERY = 5.0  # seconds between two STATUS= lines to systemd
# a worker or the share supervisor that has not turned for this long (plus mount_retry,
# the supervisor's longest sleep) is stuck: the systemd watchdog is no longer fed
STALL_LIMIT = 30.0
ALERTS_FLUSH = 5.0  # seconds a stopping daemon gives queued alerts
SETTLE_MARGIN = 5.0  # after debounce_delay, a catch-up's frames are in the ledger


class Daemon:
    """`seestar-watch run`: the share supervised from the start; once the ledger is held
    alone and prepared, the night's parts are built (a `Night`) and run."""

    def __init__(
        self, config: Config, *, process_existing: bool = False, wait_for_share: bool = True
    ) -> None:
        self.config = config
        self._asked_to_process_existing = process_existing  # on the command line, this time
        self.wait_for_share = wait_for_share
        self.source = open_source(config.image_watcher)
        self.lifecycle = Lifecycle(config.pipeline.shutdown_grace)
        self.wakeup = Wakeup()  # where idle workers wait
        self.share = ShareSupervisor(
            self.source, config.image_watcher.mount_retry, self.lifecycle.stopping, [self.wakeup]
        )
        self.share.on_turn = self.lifecycle.beat
        self.lifecycle.on_stop(self.wakeup.everyone)
        self.lifecycle.on_stop(self.share.poke)
        self.night: Night | None = None  # while run() runs (for a test to look at)

    def run(self, *, once: bool = False) -> int:
        if not self.config.image_watcher.enabled:
            raise UserError(
                f"image_watcher.enabled is false in {self.config.source}: nothing to watch"
                " (set it to true to run)"
            )
        with (
            self.lifecycle.handling_signals(),
            private_files() as user_umask,
            Ledger.exclusive(self.config.state.ledger) as ledger,
        ):
            if warning := low_space(ledger.path):
                log.warning("ledger.low_space", warning=warning)
            if warning := preflight.readable_secrets(self.config):
                log.warning("config.readable", warning=warning)
            ledger.keep_trying(self.lifecycle.stopping, self.lifecycle.beat)
            children.become_subreaper()  # what a command leaves behind is ours to stop
            prepare_ledger(ledger)
            first_start = FirstStart.decide(
                ledger,
                asked=self._asked_to_process_existing,
                configured=self.config.state.process_existing,
            )
            self.night = night = Night(
                self, ledger, first_start, command_umask=user_umask, alerting=not once
            )
            if once or not self.wait_for_share:
                self._require_share()
            return night.run_once() if once else night.run_forever()

    def _require_share(self) -> None:
        state = self.share.check()
        if not state.is_available:
            how = (
                "what is wrong"
                if isinstance(self.config.image_watcher.watch_path, SmbUrl)
                else "how to mount it"
            )
            raise UserError(
                f"the share is not available: {state.reason}; `seestar-watch check-mount`"
                f" says {how} (or run without --no-wait to wait for it)"
            )


class Night:
    """One run of the daemon over its held ledger: every part built once here (the
    intake, the processor and its worker, the alert rules and their sender), the threads
    started, then the main loop's named duties each second until a stop."""

    def __init__(
        self,
        daemon: Daemon,
        ledger: Ledger,
        first_start: FirstStart,
        *,
        command_umask: int,
        alerting: bool = True,
    ) -> None:
        config = self.config = daemon.config
        self.ledger = ledger
        self.source, self.share = daemon.source, daemon.share
        self.lifecycle, self.wakeup = daemon.lifecycle, daemon.wakeup
        # alerts are for a night; `run --once` sends none
        self.alerts, self.sender = self._alerting() if alerting else (NoAlerts(), NoAlerts())
        self.intake = Intake(
            config.image_watcher,
            self.source,
            ledger,
            self.share,
            on_pending=self._frame_arrived,
            first_start=first_start,
        )
        self.share.listen(self.intake)
        self.share.listen(self.alerts)
        self.lifecycle.on_stop(self.intake.poke)
        self.processor = FrameProcessor(
            config.pipeline,
            config.archive,
            ledger,
            self.source,
            config_file=config.source,
            should_abort=self.lifecycle.should_abort,
            share_ok=self.share_answers,
            on_outcome=self.alerts.frame_finished,
            command_umask=command_umask,
        )
        self.worker = Worker(self.processor, self.lifecycle.stopping, self.lifecycle.beat)
        self.longest_wait = config.pipeline.longest_retry_delay
        self._started = children.start_time(os.getpid())  # with the pid: this process
        self._said_stalled = False

    def _alerting(self) -> tuple[AlertRules | NoAlerts, AlertSender | NoAlerts]:
        """The alert rules and their sender (apprise), when alerts.urls has any."""
        options = self.config.alerts
        if not options.urls:
            return NoAlerts(), NoAlerts()
        from seestar_watch.alertsender import AlertSender

        rules = AlertRules(
            options,
            settle_time=self.config.image_watcher.debounce_delay + SETTLE_MARGIN,
            summarize=lambda since: night_figures(History(self.ledger).seen_since(since)),
        )
        return rules, AlertSender(options.urls)

    # -- all night -------------------------------------------------------------------

    def run_forever(self) -> int:
        self.processor.clean_archive()
        self._start_sender()
        # the share thread and the workers must keep turning; the intake may wait minutes
        # on a dead server's listing, which is no stall
        watched = [self._thread("share", self.share.run)]
        watched += [
            self._thread(f"worker-{n}", self._work)
            for n in range(1, self.config.pipeline.workers + 1)
        ]
        threads = [*watched, self._thread("intake", self.intake.run, self.lifecycle.stopping)]
        log.info(
            "daemon.started",
            watch_path=self.source.location,
            workers=self.config.pipeline.workers,
            ledger=str(self.ledger.path),
        )
        dashboard = self._start_dashboard()
        notifier = Notifier()
        notifier.ready(self.status_line())  # up, even while still waiting for the share
        duties = self._duties(notifier, threads, watched)
        while not self.lifecycle.wait(1.0):
            for duty in duties:
                duty()
        notifier.stopping("stopping: letting a running command finish")
        if dashboard is not None:
            dashboard.stop()
            dashboard.overview.ledger.close()
        self._shutdown(threads)
        self.sender.stop(ALERTS_FLUSH)
        if self.ledger.in_trouble:
            raise UserError(
                f"stopped while the ledger {self.ledger.path} could not be written (see"
                " ledger.unwritable); frames not recorded are run again at the next start"
            )
        return 0

    def _duties(
        self,
        notifier: Notifier,
        threads: list[threading.Thread],
        watched: list[threading.Thread],
    ) -> list[Callable[[], None]]:
        """What the main thread does every second, each by its name."""
        next_status = time.monotonic() + STATUS_EVERY
        view = self.view()
        report.write_daemon_view(self.ledger.path, view)  # for `seestar-watch dashboard` alone

        def feed_the_watchdog() -> None:  # if not, systemd restarts us after WatchdogSec
            if self.turning(threads, watched):
                notifier.watchdog()

        def say_status() -> None:  # to systemd: `systemctl status` shows it
            nonlocal next_status
            if time.monotonic() >= next_status:
                notifier.status(self.status_line())
                next_status = time.monotonic() + STATUS_EVERY

        def publish_the_view() -> None:  # beside the ledger, when the share's state changes
            nonlocal view
            if view != (view := self.view()):
                report.write_daemon_view(self.ledger.path, view)

        def send_alerts() -> None:  # queued: sending never holds this loop
            for alert in self.alerts.due():
                self.sender.send(alert)

        return [feed_the_watchdog, say_status, publish_the_view, send_alerts]

    def _start_sender(self) -> None:
        if isinstance(self.sender, NoAlerts):
            return
        self.sender.start()
        log.info("alerts.ready", to=[target.label for target in self.sender.targets])

    def _start_dashboard(self) -> Dashboard | None:
        """The page, from a read-only connection of its own; a port in use is one log line
        and the daemon goes on (frames matter more than the page)."""
        listen = self.config.dashboard.listen
        if listen is None:
            return None
        from seestar_watch.dashboard.server import Dashboard, DashboardError

        reader: Ledger | None = None
        try:
            reader = Ledger.open(self.ledger.path, readonly=True)
            targets = self.config.photometry.targets
            dashboard = Dashboard(
                overview.Overview(reader, self.source, self.view, targets, self.config.scope_name),
                listen,
            )
            dashboard.start()
        except (DashboardError, LedgerError) as exc:
            if reader is not None:
                reader.close()
            log.error(
                "dashboard.unavailable",
                reason=str(exc),
                effect="frames are watched and run as usual, with no page",
            )
            return None
        log.info("dashboard.started", url=dashboard.url, local_only=dashboard.local_only)
        return dashboard

    def view(self) -> dict[str, Any]:
        """The daemon's view of the share, for the dashboard (JSON-ready)."""
        state = self.share.state
        return {
            "running": True,
            "served_by": "daemon",
            "pid": os.getpid(),
            "pid_started": self._started,
            "watch_path": self.source.location,
            "share": "checking" if state is None else "up" if state.is_available else "down",
            "reason": None if state is None or state.is_available else state.reason,
            "observer": self.source.observer_used,
        }

    def turning(self, threads: list[threading.Thread], watched: list[threading.Thread]) -> bool:
        """Every thread alive, and the `watched` ones (the workers and the share supervisor)
        turning: a dead or stuck thread stops the systemd watchdog, and systemd restarts
        the daemon."""
        if not all(thread.is_alive() for thread in threads):
            return False
        # the supervisor sleeps up to mount_retry (CHECK_WHILE_UP while the share is up)
        limit = STALL_LIMIT + max(
            self.config.image_watcher.mount_retry, share_module.CHECK_WHILE_UP
        )
        stalled = self.lifecycle.stalled([t.name for t in watched], limit)
        if stalled and not self._said_stalled:
            log.error("daemon.stalled", threads=stalled, limit_s=limit)
        self._said_stalled = bool(stalled)
        return not stalled

    def status_line(self) -> str:
        """What the daemon is doing, in one line (systemctl status shows it)."""
        state = self.share.state
        if state is None or not state.is_available:
            doing = "waiting for the share" + (f": {state.reason}" if state else "")
        else:
            folders = count_of(self.intake.folders, "folder")
            doing = f"watching {self.source.location} ({folders})"
        last_frame = self.worker.last_frame
        last = f"; last frame {last_frame}" if last_frame else ""
        return f"{doing}; {self.ledger.pending_count()} pending{last}"

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
        self.wakeup.everyone()
        self.intake.poke()
        limit = time.monotonic() + self.config.pipeline.shutdown_grace + TERM_GRACE + 5.0
        for thread in threads:
            thread.join(max(0.1, limit - time.monotonic()))
        self.intake.stop()
        stuck = [t.name for t in threads if t.is_alive()]
        log.info("daemon.stopped", stuck_threads=stuck or None)

    def _thread(self, name: str, target: Any, *args: Any) -> threading.Thread:
        """A thread of the daemon, started again if anything escapes it (a bug): a thread
        that stopped watching while the page says "up" would lose the whole night."""
        thread = threading.Thread(
            target=self.lifecycle.keep_running,
            args=(name, lambda: target(*args), self._thread_failed),
            name=f"seestar-watch-{name}",
            daemon=True,
        )
        thread.start()
        return thread

    def _thread_failed(self, name: str, exc: Exception) -> None:
        self.alerts.thread_failed(name, f"{type(exc).__name__}: {exc}")

    def _frame_arrived(self) -> None:
        """A frame finished arriving and waits in the ledger (intake thread)."""
        self.alerts.frame_arrived()
        self.wakeup.one()

    def _work(self) -> None:
        """One worker thread: frames as they are due, while the share is there."""

        def claim() -> Frame | None:
            return self.ledger.claim_next(self.longest_wait) if self.share.available else None

        def wait() -> bool:  # for a wake-up, the next retry, or `retry` from outside
            due = self.ledger.seconds_until_due(longest_wait=self.longest_wait)
            self.wakeup.wait(LEDGER_POLL if due is None else min(due, LEDGER_POLL))
            return True

        try:
            for _, state in self.worker.drain(claim, wait):
                if state in ("postponed", "waiting"):  # the share or the archive's disk first
                    self.wakeup.wait(LEDGER_POLL)
        except LedgerError:
            return  # only raised once stopping: the daemon reports it as it exits

    # -- run --once ------------------------------------------------------------------

    def run_once(self) -> int:
        """Catch up, run everything pending (waiting out retry delays), then return."""
        self.intake.baseline_or_continue()
        self.intake.warn_if_frames_unwatched()
        self.processor.clean_archive()
        for entry in sorted(self.source.list_frames(), key=lambda e: e.mtime_ns):
            if not self.ledger.knows(entry):
                read_and_record(
                    self.ledger,
                    self.source,
                    entry.relpath,
                    max_frame_mb=self.config.image_watcher.max_frame_mb,
                )

        def wait() -> bool:  # out a retry's delay; nothing left to wait for: done
            due = self.ledger.seconds_until_due(longest_wait=self.longest_wait)
            return due is not None and not self.lifecycle.wait(due)

        claim = lambda: self.ledger.claim_next(self.longest_wait)  # noqa: E731
        for _, state in self.worker.drain(claim, wait):
            if state == "postponed":
                raise UserError("the share went away; the frames left are still pending")
            if state == "waiting":
                raise UserError(f"{self.processor.low_space}; the frames left are still pending")
        counts = History(self.ledger).counts()
        log.info("daemon.once_finished", failed_this_run=self.worker.failed, **counts)
        return 1 if self.worker.failed else 0
