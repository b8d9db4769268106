"""What is worth telling the user during the night, and when: the rules, with no sending.

The daemon reports what happens (the share lost or back, a frame arriving, a frame
ending) and asks `due()` once a second for the alerts to send; `alertsender.py` sends
them. Each alert goes once per occurrence:

- the share lost for more than `share_lost_after` s, and back again (how long it was
  gone, how many frames came in meanwhile, counted once the catch-up has settled);
- frames that ended `failed`: the first at once, the next ones within `min_interval`
  gathered into one message with a count;
- no new frame for `stalled_after` s while the share is up, after frames came in this
  night (not in the day, not before the night's first frame);
- a result field past a user's limit for `results_frames` frames in a row, once until a
  frame is back within it;
- the archive's disk too full to copy a frame (frames wait), once until a copy is made;
- a thread of the daemon that failed (a bug) and was started again, once per kind;
- a summary when the night ends: the share away for `night_over_after` s after frames
  came in, or at `summary_at` local time; frames that follow it the same night reopen
  the night, and its next summary says it corrects the last.

Time comes from two callables (monotonic for durations, the local wall clock for
`summary_at` and the times shown), so the tests drive it.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from seestar_watch.config import AlertsConfig
from seestar_watch.log import count_of, escape
from seestar_watch.outcomes import TAIL_LINES, Outcome
from seestar_watch.results import numeric_fields

if TYPE_CHECKING:
    from seestar_watch.history import FrameRow

FAILURES_LISTED = 5  # frames named in one message about many failures
ARRIVAL_SLACK = 5.0  # seconds between a frame's row in the ledger and the notice of it
REOPEN_WITHIN = 6 * 3600.0  # frames this soon after a night's summary are still that night


@dataclass(frozen=True)
class Alert:
    # share_lost, share_back, failed, stalled, result, summary, low_space, thread_failed, test
    kind: str
    title: str
    body: str


@dataclass
class _Night:
    started: float | None = None  # wall time of the night's first frame
    frames: int = 0  # frames that came in
    last_arrival: float | None = None  # monotonic
    stall_said: bool = False
    summarized_in_loss: bool = False  # its summary was sent during this outage
    corrected: bool = False  # a summary was sent, then frames followed: the next corrects it


@dataclass
class _Share:
    up: bool | None = None
    lost_at: float | None = None  # monotonic
    lost_wall: float | None = None
    reason: str = ""
    lost_said: bool = False
    arrivals_since_loss: int = 0
    back_at: float | None = None  # monotonic: when to say it is back
    gone_for: float = 0.0


@dataclass
class _Failures:
    waiting: list[Outcome] = field(default_factory=list)
    last_said: float | None = None  # monotonic


Summarize = Callable[[float], tuple[dict[str, int], dict[str, float]]]


class AlertRules:
    def __init__(
        self,
        config: AlertsConfig,
        *,
        settle_time: float,
        summarize: Summarize,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.settle_time = settle_time  # a catch-up's frames are recorded by then
        self.summarize = summarize  # (night start, wall) -> (counts, medians), from the ledger
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()  # events come from the share thread and the workers
        self._ready: list[Alert] = []
        self._night = _Night()
        self._share = _Share()
        self._failures = _Failures()
        self._streaks: dict[str, int] = dict.fromkeys(config.results, 0)
        self._result_said: set[str] = set()
        self._threads_said: set[tuple[str, str]] = set()
        self._summarized: tuple[_Night | None, float] = (None, 0.0)  # the last, and when
        self._summary_day: str | None = self._today() if self._past_summary_time() else None

    # -- what happens -------------------------------------------------------------------

    def share_up(self, state: Any) -> None:  # a ShareListener (share.py)
        self.share_changed(True)

    def share_down(self, state: Any) -> None:
        self.share_changed(False, state.reason)

    def share_changed(self, up: bool, reason: str = "") -> None:
        with self._lock:
            share, now = self._share, self._monotonic()
            if not up and share.up is True:  # lost: it was there (not a scope off all day)
                share.lost_at, share.lost_wall, share.reason = now, self._wall(), escape(reason)
                share.lost_said, share.arrivals_since_loss = False, 0
            elif up and share.up is False and share.lost_at is not None:
                if share.lost_said:  # said lost: say back, once the catch-up has settled
                    share.back_at = now + self.settle_time
                    share.gone_for = now - share.lost_at
                share.lost_at = None
            share.up = up

    def frame_arrived(self) -> None:
        with self._lock:
            summarized, summed_at = self._summarized
            if (  # frames soon after the night's summary: the same night, corrected later
                self._night.started is None
                and summarized is not None
                and self._wall() - summed_at < REOPEN_WITHIN
            ):
                self._night, self._summarized = summarized, (None, 0.0)
                self._night.corrected, self._night.summarized_in_loss = True, False
            night = self._night
            if night.started is None:  # the frame's row was written a moment before
                night.started = self._wall() - ARRIVAL_SLACK
            night.frames += 1
            night.last_arrival, night.stall_said = self._monotonic(), False
            self._share.arrivals_since_loss += 1

    def frame_finished(self, outcome: Outcome) -> None:
        # names, reasons and output come from the share and the command: one printable
        # line each in a message, whatever they hold
        outcome = Outcome(
            escape(outcome.name),
            outcome.state,
            outcome.exit_code,
            None if outcome.reason is None else escape(outcome.reason),
            tuple(escape(line) for line in outcome.output_tail[-TAIL_LINES:]),
            outcome.result,
        )
        with self._lock:
            if outcome.state == "failed":
                self._failures.waiting.append(outcome)
            elif outcome.state == "low_space":
                self._ready.append(
                    Alert(
                        "low_space",
                        "Archive disk nearly full: frames wait",
                        f"{outcome.reason}. Nothing is lost: they run once there is room"
                        " (free space, or lower archive.min_free_mb).",
                    )
                )
            elif outcome.state in ("broker_lost", "broker_back"):
                self._ready.append(_broker_alert(outcome))
            elif outcome.state == "done" and outcome.result:
                self._check_results(outcome)

    def thread_failed(self, thread: str, error: str) -> None:
        """A thread of the daemon failed (a bug) and is started again: said once per thread
        and kind of error, so a thread that fails every minute is one message."""
        said = (thread, error)
        with self._lock:
            if said in self._threads_said:
                return
            self._threads_said.add(said)
            self._ready.append(
                Alert(
                    "thread_failed",
                    f"seestar-watch: its {thread} thread failed",
                    f"The {thread} thread stopped on an error it did not expect"
                    f" ({escape(error)}) and was started again. Frames go on; this is a bug:"
                    " please report it with the daemon's log.",
                )
            )

    # -- what to send -------------------------------------------------------------------

    def due(self) -> list[Alert]:
        """The alerts to send now (called about once a second)."""
        with self._lock:
            now = self._monotonic()
            self._share_alerts(now)
            self._failure_alert(now)
            self._stall_alert(now)
            if self._summary_time_came():
                self._end_night("summary time")
            ready, self._ready = self._ready, []
            return ready

    def _share_alerts(self, now: float) -> None:
        share = self._share
        lost_for = None if share.lost_at is None else now - share.lost_at
        if (
            lost_for is not None
            and not share.lost_said
            and lost_for >= self.config.share_lost_after
        ):
            share.lost_said = True
            since = _clock(share.lost_wall or self._wall())
            self._ready.append(
                Alert(
                    "share_lost",
                    f"Seestar share lost for {_duration(self.config.share_lost_after)}",
                    f"The share has not answered since {since}:"
                    f" {share.reason or 'no reason given'}. Frames the telescope writes"
                    " meanwhile wait on it and are run when it is back. If the night is not"
                    " over: is the telescope on, and on the network?",
                )
            )
        if (  # the telescope went away after a night's work and stayed away: its end
            lost_for is not None
            and lost_for >= self.config.night_over_after
            and self._night.frames
            and not self._night.summarized_in_loss
        ):
            self._night.summarized_in_loss = True
            self._end_night(f"the share is away since {_clock(share.lost_wall or self._wall())}")
        if share.back_at is not None and now >= share.back_at:
            share.back_at = None
            came = count_of(share.arrivals_since_loss, "frame")
            self._ready.append(
                Alert(
                    "share_back",
                    f"Seestar share back after {_duration(share.gone_for)}",
                    f"The share answers again; {came} came in since it was lost.",
                )
            )

    def _failure_alert(self, now: float) -> None:
        failures = self._failures
        if not failures.waiting:
            return
        if failures.last_said is not None and now - failures.last_said < self.config.min_interval:
            return  # gathered: one message with a count when the interval is over
        waiting, failures.waiting, failures.last_said = failures.waiting, [], now
        last = waiting[-1]
        why = _why(last)
        tail = "\n".join(last.output_tail[-TAIL_LINES:])
        output = f"\n\nIts last output:\n{tail}" if tail else ""
        if len(waiting) == 1:
            self._ready.append(
                Alert("failed", f"Frame failed: {last.name}", f"{last.name} failed: {why}.{output}")
            )
            return
        names = ", ".join(outcome.name for outcome in waiting[:FAILURES_LISTED])
        more = len(waiting) - FAILURES_LISTED
        listed = names + (f" and {more} more" if more > 0 else "")
        self._ready.append(
            Alert(
                "failed",
                f"{len(waiting)} frames failed",
                f"{len(waiting)} frames failed since the last message: {listed}. The last,"
                f" {last.name}: {why}.{output}\n\n`seestar-watch status` lists them;"
                " `seestar-watch retry --failed` runs them again.",
            )
        )

    def _stall_alert(self, now: float) -> None:
        night = self._night
        if (
            self._share.up
            and night.last_arrival is not None
            and not night.stall_said
            and now - night.last_arrival >= self.config.stalled_after
        ):
            night.stall_said = True
            last = _clock(self._wall() - (now - night.last_arrival))
            self._ready.append(
                Alert(
                    "stalled",
                    f"No new frame for {_duration(self.config.stalled_after)}",
                    f"The last frame came at {last} and the share is up, but nothing since."
                    " Is the telescope still imaging (clouds, a lost target, a full disk, the"
                    " app stopped)?",
                )
            )

    def _check_results(self, outcome: Outcome) -> None:
        numbers = numeric_fields(outcome.result)
        for name, limit in self.config.results.items():
            value = numbers.get(name)
            if value is None:
                continue  # this frame says nothing about it
            if not limit.crossed(value):
                self._streaks[name] = 0
                self._result_said.discard(name)  # recovered: may be said again
                continue
            self._streaks[name] += 1
            frames = self.config.results_frames
            if self._streaks[name] >= frames and name not in self._result_said:
                self._result_said.add(name)
                self._ready.append(
                    Alert(
                        "result",
                        f"{name} {limit} for {count_of(frames, 'frame')} in a row",
                        f"{name} is {value:g} in {outcome.name} ({limit} is your limit in"
                        f" alerts.results), {count_of(self._streaks[name], 'frame')} in a row."
                        " Clouds, dew or focus? Said once until a frame is within the limit.",
                    )
                )

    # -- the night's summary ------------------------------------------------------------

    def _summary_time_came(self) -> bool:
        if self.config.summary_at is None or not self._past_summary_time():
            return False
        today = self._today()
        if self._summary_day == today:
            return False
        self._summary_day = today
        return self._night.frames > 0

    def _past_summary_time(self) -> bool:
        at = self.config.summary_at
        return at is not None and datetime.fromtimestamp(self._wall()).strftime("%H:%M") >= at

    def _today(self) -> str:
        return datetime.fromtimestamp(self._wall()).strftime("%Y-%m-%d")

    def _end_night(self, why: str) -> None:
        night, self._night = self._night, _Night()
        self._summarized = (night, self._wall())  # frames soon after reopen it
        counts, medians = self.summarize(night.started or self._wall())
        lines = [
            f"{counts.get('done', 0)} done, {counts.get('failed', 0)} failed,"
            f" {counts.get('rejected', 0)} rejected, {counts.get('pending', 0)} pending"
            f" since {_clock(night.started or self._wall())} ({why})."
        ]
        if medians:
            lines.append("Medians: " + ", ".join(f"{k} {v:.4g}" for k, v in medians.items()) + ".")
        corrected = " (corrected: frames followed the last one)" if night.corrected else ""
        self._ready.append(
            Alert(
                "summary",
                f"Night summary: {count_of(counts.get('done', 0), 'frame')} done{corrected}",
                "\n".join(lines),
            )
        )


class NoAlerts:
    """The rules and the sender when `alerts.urls` has none: told everything as the real
    ones are, nothing is ever due or sent (and apprise is never imported)."""

    def share_up(self, state: Any) -> None:
        pass

    def share_down(self, state: Any) -> None:
        pass

    def frame_arrived(self) -> None:
        pass

    def frame_finished(self, outcome: Outcome) -> None:
        pass

    def thread_failed(self, thread: str, error: str) -> None:
        pass

    def due(self) -> list[Alert]:
        return []

    def send(self, alert: Alert | None) -> None:
        pass

    def stop(self, timeout: float) -> None:
        pass


def _broker_alert(outcome: Outcome) -> Alert:
    """The task queue's broker went away, or is back (pipeline.executor: celery)."""
    if outcome.state == "broker_lost":
        return Alert(
            "broker_lost",
            "Task queue unreachable: frames wait",
            f"The broker does not answer ({outcome.reason}). Nothing is lost: frames wait as"
            " pending and are run once it is back. Is redis-server running?",
        )
    return Alert("broker_back", "Task queue back", "The broker answers again; frames run.")


def trial_alert(watch_path: str) -> Alert:
    """`alert-test`'s message."""
    return Alert(
        "test",
        "seestar-watch test message",
        f"This channel will hear from seestar-watch (watching {watch_path}) when the share"
        " is lost, frames fail, the telescope stops delivering, a result crosses your limits,"
        " and when a night ends.",
    )


def night_figures(frames: Iterable[FrameRow]) -> tuple[dict[str, int], dict[str, float]]:
    """Counts per state, and the median of every numeric result field of the done frames."""
    counts: dict[str, int] = {}
    values: dict[str, list[float]] = {}
    for frame in frames:
        counts[frame.state] = counts.get(frame.state, 0) + 1
        if frame.state != "done":
            continue
        for key, value in numeric_fields(frame.result).items():
            values.setdefault(key, []).append(value)
    return counts, {key: statistics.median(found) for key, found in values.items()}


def _why(outcome: Outcome) -> str:
    if outcome.reason:
        return outcome.reason
    return f"exit code {outcome.exit_code}" if outcome.exit_code is not None else "unknown"


def _clock(wall: float) -> str:
    return datetime.fromtimestamp(wall).strftime("%H:%M")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
