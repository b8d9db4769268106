"""The alert rules with a fake clock: what is said, once, and when (no sending here)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from seestar_watch.alerts import Alert, AlertRules, night_figures
from seestar_watch.config import AlertsConfig, ConfigError, ResultLimit, parse_config
from seestar_watch.history import FrameRow
from seestar_watch.outcomes import Outcome, State


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = datetime(2026, 11, 23, 20, 0).timestamp()

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def rules(clock: Clock, **settings: Any) -> AlertRules:
    config = AlertsConfig(urls=("json://127.0.0.1/",), **settings)
    figures = ({"done": 3, "failed": 1}, {"stars": 41.0})
    return AlertRules(
        config,
        settle_time=7.0,
        summarize=lambda since: figures,
        monotonic=lambda: clock.mono,
        wall=lambda: clock.wall,
    )


def after(clock: Clock, rule: AlertRules, seconds: float) -> list[Alert]:
    """What is due, asked every second for `seconds`, as the daemon asks."""
    said = []
    for _ in range(int(seconds)):
        clock.advance(1)
        said += rule.due()
    return said


def kinds(alerts: list[Alert]) -> list[str]:
    return [alert.kind for alert in alerts]


def test_the_share_lost_past_the_threshold_is_said_once_and_back_with_the_frames_meanwhile() -> (
    None
):
    clock = Clock()
    rule = rules(clock, share_lost_after=300)
    rule.share_changed(True)
    rule.share_changed(False, "no answer within 10 s")
    assert after(clock, rule, 299) == []
    (lost,) = after(clock, rule, 2)
    assert lost.title == "Seestar share lost for 5 min" and "no answer within 10 s" in lost.body
    assert after(clock, rule, 600) == []  # once per occurrence
    rule.share_changed(True)
    rule.frame_arrived()  # found by the catch-up after the share came back
    rule.frame_arrived()
    assert after(clock, rule, 6) == []  # the catch-up's frames settle first
    (back,) = after(clock, rule, 2)
    assert back.kind == "share_back" and back.title == "Seestar share back after 15 min"
    assert "2 frames came in since it was lost" in back.body


def test_a_short_outage_or_a_share_never_seen_says_nothing() -> None:
    clock = Clock()
    rule = rules(clock, share_lost_after=300)
    rule.share_changed(False, "not mounted")  # off all afternoon: never up, never lost
    assert after(clock, rule, 1000) == []
    rule.share_changed(True)
    rule.share_changed(False, "blip")
    assert after(clock, rule, 100) == []
    rule.share_changed(True)
    assert after(clock, rule, 400) == []


def failed(name: str, code: int = 3) -> Outcome:
    return Outcome(name, "failed", code, f"exit code {code}", ("reading", "photometry failed"))


def test_failures_the_first_at_once_then_one_message_with_a_count_per_interval() -> None:
    clock = Clock()
    rule = rules(clock, min_interval=600)
    rule.frame_finished(failed("a.fit"))
    (first,) = after(clock, rule, 1)
    assert first.title == "Frame failed: a.fit"
    assert "exit code 3" in first.body and "photometry failed" in first.body
    for n in range(30):
        rule.frame_finished(failed(f"f{n}.fit"))
        assert after(clock, rule, 10) == []  # within the interval: gathered
    (many,) = after(clock, rule, 300)
    assert many.title == "30 frames failed" and "f0.fit, f1.fit" in many.body
    assert "and 25 more" in many.body and "retry --failed" in many.body


def test_names_and_output_from_the_share_are_one_printable_line_each() -> None:
    clock = Clock()
    rule = rules(clock)
    rule.frame_finished(Outcome("a\nb\x1b[2J.fit", "failed", 1, None, ("x\ry",)))
    (said,) = after(clock, rule, 1)
    assert "a\\nb\\x1b[2J.fit" in said.title and "x\\ry" in said.body


def test_a_stall_is_said_once_while_the_share_is_up_after_the_first_frame() -> None:
    clock = Clock()
    rule = rules(clock, stalled_after=900, share_lost_after=300)
    rule.share_changed(True)
    assert after(clock, rule, 2000) == []  # before the first frame of the night: nothing
    rule.frame_arrived()
    assert after(clock, rule, 899) == []
    (stalled,) = after(clock, rule, 2)
    assert stalled.title == "No new frame for 15 min" and "20:" in stalled.body
    assert after(clock, rule, 3000) == []  # once per occurrence
    rule.frame_arrived()  # imaging again: armed again
    assert kinds(after(clock, rule, 901)) == ["stalled"]


def test_no_stall_while_the_share_is_down_and_none_after_the_night_ended() -> None:
    clock = Clock()
    rule = rules(clock, stalled_after=900, share_lost_after=300, night_over_after=3600)
    rule.share_changed(True)
    rule.frame_arrived()
    rule.share_changed(False, "telescope off")  # dawn
    said = after(clock, rule, 3700)
    assert kinds(said) == ["share_lost", "summary"]  # away for an hour: the night ended
    rule.share_changed(True)  # the next evening
    assert kinds(after(clock, rule, 3000)) == ["share_back"]  # no stall before a frame


def test_a_share_lost_in_the_night_is_no_summary_and_frames_after_one_correct_it() -> None:
    clock = Clock()
    rule = rules(clock, share_lost_after=300, night_over_after=3600)
    rule.share_changed(True)
    rule.frame_arrived()
    rule.share_changed(False, "Wi-Fi dropped")  # twenty minutes away in the night
    assert kinds(after(clock, rule, 1200)) == ["share_lost"]  # not yet the night's end
    rule.share_changed(True)
    for _ in range(15):  # the night goes on
        rule.frame_arrived()
    assert kinds(after(clock, rule, 60)) == ["share_back"]
    rule.share_changed(False, "telescope off")  # dawn
    said = after(clock, rule, 3700)
    assert kinds(said) == ["share_lost", "summary"]
    assert said[1].title == "Night summary: 3 frames done"  # once, for the whole night
    rule.share_changed(True)  # it comes back before the day: the night was not over
    rule.frame_arrived()
    rule.share_changed(False, "off for good")
    said = after(clock, rule, 3700)
    assert kinds(said) == ["share_back", "share_lost", "summary"]
    assert said[2].title == "Night summary: 3 frames done (corrected: frames followed the last one)"
    clock.advance(12 * 3600)  # the next evening: a night of its own
    rule.share_changed(True)
    rule.frame_arrived()
    rule.share_changed(False, "dawn")
    assert [a.title for a in after(clock, rule, 3700)][-1] == "Night summary: 3 frames done"


def test_a_result_past_its_limit_for_n_frames_in_a_row_once_until_it_recovers() -> None:
    clock = Clock()
    limits = {"stars": ResultLimit(below=20), "fwhm_arcsec": ResultLimit(above=6)}
    rule = rules(clock, results=limits, results_frames=3)

    def done(**result: Any) -> list[Alert]:
        rule.frame_finished(Outcome("x.fit", "done", 0, result=result))
        return after(clock, rule, 1)

    assert done(stars=12) == [] and done(stars=10) == []
    assert done(stars=30) == []  # a good frame breaks the run
    assert done(stars=12) == [] and done(stars=11) == [] and done(note="no stars key") == []
    (clouds,) = done(stars=9)
    assert clouds.title == "stars below 20 for 3 frames in a row"
    assert "stars is 9 in x.fit" in clouds.body
    assert done(stars=8) == [] and done(stars=7) == []  # once ...
    assert done(stars=25) == []  # ... until it recovers
    assert done(stars=1) == [] and done(stars=1) == []
    assert kinds(done(stars=1)) == ["result"]
    assert done(fwhm_arcsec=7) == [] and done(fwhm_arcsec=True) == []  # booleans say nothing


def test_the_summary_at_its_time_once_a_day_only_after_a_night_with_frames() -> None:
    clock = Clock()  # 20:00
    rule = rules(clock, summary_at="07:30")
    rule.frame_arrived()
    said = after(clock, rule, 11.5 * 3600 - 1)  # until 07:29:59
    assert said == []
    (summary,) = after(clock, rule, 2)
    assert summary.title == "Night summary: 3 frames done"
    assert "3 done, 1 failed, 0 rejected" in summary.body and "stars 41" in summary.body
    assert after(clock, rule, 23 * 3600) == []  # no frames the next night: nothing


def test_a_daemon_started_after_the_summary_time_waits_for_the_next_day() -> None:
    clock = Clock()
    clock.wall = datetime(2026, 11, 24, 9, 0).timestamp()
    rule = rules(clock, summary_at="07:30")
    rule.frame_arrived()
    assert after(clock, rule, 3600) == []


def test_night_figures_count_states_and_take_medians_of_done_frames() -> None:
    def row(state: State, result: dict[str, Any] | None) -> FrameRow:
        return FrameRow(1, "a.fit", state, 1, None, None, None, 0.0, 0.0, result)

    frames = [
        row("done", {"stars": 10, "fwhm": 3.0, "ok": True, "note": "x"}),
        row("done", {"stars": 30}),
        row("done", None),
        row("failed", {"stars": 1000}),
    ]
    assert night_figures(frames) == ({"done": 3, "failed": 1}, {"stars": 20.0, "fwhm": 3.0})


def parse(alerts: Any) -> AlertsConfig:
    raw = {"image_watcher": {"watch_path": "/x"}, "pipeline": {"command": ["true"]}}
    return parse_config({**raw, "alerts": alerts}, Path("c.yaml")).alerts


def test_alert_settings_are_checked() -> None:
    config = parse({"results": {"stars": {"below": 20}}, "summary_at": "7:05"})
    assert config.results == {"stars": ResultLimit(below=20.0)} and config.summary_at == "07:05"
    assert config.share_lost_after == 300 and config.min_interval == 600
    assert config.stalled_after == 900 and config.results_frames == 3
    with pytest.raises(ConfigError) as error:
        parse(
            {
                "results": {"stars": {"under": 20}, "fwhm": {"above": "six"}},
                "summary_at": "25:00",
                "results_frames": 0,
                "urls": "ntfy://x",
            }
        )
    text = str(error.value)
    for problem in (
        "alerts.results.stars: expected {below: N} and/or {above: N}",
        "alerts.results.fwhm.above: expected a number",
        'alerts.summary_at: expected a local time "HH:MM"',
        "alerts.results_frames: expected a whole number from 1 to 10000",
        "alerts.urls: expected a list of non-empty strings",
    ):
        assert problem in text, problem
