"""ImageWatcher with real watchdog observers on real folders."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from seestar_watch import ImageWatcher
from tests.conftest import (
    Recorder,
    events_named,
    frame_bytes,
    real_header,
    small_header,
    wait_for,
    write_frame,
)

DEBOUNCE = 0.3
OBSERVERS = ["native", "polling"]


def started(path: Path, callback: Any, **options: Any) -> ImageWatcher:
    options.setdefault("poll_interval", 0.1)
    watcher = ImageWatcher(path, callback, options.pop("debounce_delay", DEBOUNCE), **options)
    assert watcher.start()
    return watcher


@pytest.fixture
def watch(tmp_path: Path, recorder: Recorder):  # type: ignore[no-untyped-def]
    watchers: list[ImageWatcher] = []

    def make(path: Path | None = None, callback: Any = None, **options: Any) -> ImageWatcher:
        watcher = started(path or tmp_path, callback or recorder, **options)
        watchers.append(watcher)
        return watcher

    yield make
    for watcher in watchers:
        watcher.stop()


def quiet_for(seconds: float) -> None:
    """Give a watcher time in which it must NOT do something (negative checks only)."""
    time.sleep(seconds)


@pytest.mark.parametrize("observer", OBSERVERS)
def test_one_callback_per_file_with_path_header_and_size(
    tmp_path: Path, recorder: Recorder, watch: Any, observer: str
) -> None:
    watch(observer=observer)
    frame = frame_bytes(real_header())
    (tmp_path / "Light_M 94_10.0s_IRCUT_20250326-212046.fit").write_bytes(frame)
    (tmp_path / "second.fits").write_bytes(frame_bytes(small_header()))

    wait_for(lambda: len(recorder.events) == 2)
    quiet_for(DEBOUNCE * 3)
    assert len(recorder.events) == 2
    first = next(e for e in recorder.events if e["path"].endswith(".fit"))
    assert first["path"] == str(tmp_path / "Light_M 94_10.0s_IRCUT_20250326-212046.fit")
    assert os.path.isabs(first["path"])
    assert first["header"]["OBJECT"] == "M 94"
    assert "COMMENT" not in first["header"]
    assert first["size_kb"] == pytest.approx(len(frame) / 1024)


@pytest.mark.parametrize("observer", OBSERVERS)
def test_slow_write_in_chunks_fires_once_after_the_last_chunk(
    tmp_path: Path, recorder: Recorder, watch: Any, observer: str
) -> None:
    watch(observer=observer)
    frame = frame_bytes(real_header())
    chunks = 12
    step = -(-len(frame) // chunks)
    with (tmp_path / "slow.fit").open("wb") as out:
        for i in range(chunks):  # 12 chunks, 0.2 s apart: ~2.4 s, far longer than the debounce
            out.write(frame[i * step : (i + 1) * step])
            out.flush()
            time.sleep(0.2)
        last_write = time.monotonic()

    wait_for(lambda: recorder.events)
    quiet_for(DEBOUNCE * 3)
    assert len(recorder.events) == 1
    assert recorder.times[0] >= last_write
    assert recorder.events[0]["size_kb"] == pytest.approx(len(frame) / 1024)


@pytest.mark.parametrize("temp_name", ["frame.fit.tmp", "3f2a9c1e-GUID.fits"])
def test_temporary_renamed_to_fits_fires_once_for_the_final_path(
    tmp_path: Path, recorder: Recorder, watch: Any, temp_name: str
) -> None:
    watch(observer="native")
    temp = tmp_path / temp_name
    temp.write_bytes(frame_bytes())
    temp.rename(tmp_path / "final.fit")

    wait_for(lambda: recorder.events)
    quiet_for(DEBOUNCE * 3)
    assert recorder.paths == [str(tmp_path / "final.fit")]


def test_renamed_within_one_poll_fires_for_the_final_path(
    tmp_path: Path, recorder: Recorder, watch: Any
) -> None:
    watch(observer="polling", poll_interval=0.5)
    temp = tmp_path / "frame.fit.part"
    temp.write_bytes(frame_bytes())
    temp.rename(tmp_path / "final.fit")
    wait_for(lambda: recorder.events)
    quiet_for(1.0)
    assert recorder.paths == [str(tmp_path / "final.fit")]


@pytest.mark.parametrize("observer", OBSERVERS)
def test_complete_header_with_short_data_waits_for_the_rest(
    tmp_path: Path, recorder: Recorder, watch: Any, observer: str
) -> None:
    watch(observer=observer)
    frame = frame_bytes(real_header())
    path = tmp_path / "stalled.fit"
    with path.open("wb") as out:
        out.write(frame[: len(frame) // 3])
        out.flush()
        quiet_for(DEBOUNCE * 5)  # a stalled SMB write: quiet, but visibly incomplete
        assert recorder.events == []
        out.write(frame[len(frame) // 3 :])

    wait_for(lambda: recorder.events)
    assert recorder.events[0]["size_kb"] == pytest.approx(len(frame) / 1024)


def test_a_file_that_never_completes_is_called_back_once_as_incomplete(
    tmp_path: Path, recorder: Recorder, watch: Any, logs: list[dict[str, Any]]
) -> None:
    watch(observer="native", incomplete_timeout=0.8)
    (tmp_path / "truncated.fit").write_bytes(frame_bytes()[:10_000])

    wait_for(lambda: recorder.events)
    quiet_for(1.0)
    (event,) = recorder.events  # a cut-off copy reaches the callback too, once
    assert event["path"] == str(tmp_path / "truncated.fit") and event["header"] == {}
    assert event["complete"] is False and "10000 of" in event["reason"]
    assert event["size_kb"] == pytest.approx(10_000 / 1024)
    warnings = events_named(logs, "frame.incomplete")
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["path"] == str(tmp_path / "truncated.fit")


@pytest.mark.parametrize("observer", OBSERVERS)
def test_wait_for_complete_false_calls_back_after_the_quiet_period_whatever_it_holds(
    tmp_path: Path, recorder: Recorder, watch: Any, observer: str
) -> None:
    watch(observer=observer, wait_for_complete=False)
    stub = tmp_path / "stub.fit"
    stub.write_bytes(b"SIMPLE  =                    T")  # a script's own tests write one
    whole = tmp_path / "whole.fit"
    whole.write_bytes(frame_bytes(small_header()))
    wait_for(lambda: len(recorder.events) == 2)
    quiet_for(DEBOUNCE * 3)
    events = {os.path.basename(e["path"]): e for e in recorder.events}
    assert len(recorder.events) == 2  # once each, not once more when it never completes
    assert events["stub.fit"]["complete"] is False and events["stub.fit"]["header"] == {}
    assert events["stub.fit"]["reason"] == "header still arriving"
    assert events["whole.fit"]["complete"] is True and events["whole.fit"]["reason"] is None
    assert events["whole.fit"]["header"]["OBJECT"] == "M 94"


def test_rescans_do_not_restart_the_give_up_clock_of_a_truncated_frame(
    tmp_path: Path, recorder: Recorder, watch: Any, logs: list[dict[str, Any]]
) -> None:
    # a copy cut off at 8 KB of 4 MB stays so all night; every rescan notices it again
    watcher = watch(observer="native", incomplete_timeout=2.0)
    path = tmp_path / "cut_off.fit"
    path.write_bytes(frame_bytes()[:8192])
    started = time.monotonic()

    def noticed_until_given_up() -> bool:
        watcher.notice(str(path))  # a rescan every 0.5 s: quiet in between, but 4 per timeout
        return bool(events_named(logs, "frame.incomplete"))

    wait_for(noticed_until_given_up, timeout=10, interval=0.5)
    assert time.monotonic() - started < 6
    for _ in range(10):  # the same version is not given up on twice
        watcher.notice(str(path))
    quiet_for(1.5)
    assert len(events_named(logs, "frame.incomplete")) == 1
    assert [event["complete"] for event in recorder.events] == [False]  # called back once


def test_a_truncated_frame_that_grows_again_restarts_the_clock(
    tmp_path: Path, recorder: Recorder, watch: Any, logs: list[dict[str, Any]]
) -> None:
    watch(observer="native", incomplete_timeout=1.0)
    path = tmp_path / "slow.fit"
    frame = frame_bytes(real_header())
    with path.open("wb") as out:
        for offset in range(0, len(frame), len(frame) // 8):  # a stalled link: 0.4 s pauses
            out.write(frame[offset : offset + len(frame) // 8])
            out.flush()
            time.sleep(0.4)
    wait_for(lambda: recorder.events)
    assert events_named(logs, "frame.incomplete") == []


@pytest.mark.parametrize("observer", OBSERVERS)
def test_only_fits_names_trigger(
    tmp_path: Path, recorder: Recorder, watch: Any, observer: str
) -> None:
    watch(observer=observer)
    stem = "Light_M 42_10.0s_IRCUT_20240101-203001"
    for name in [f"{stem}.jpg", f"{stem}_thn.jpg", "notes.txt", "frame.fits.bak", "fit"]:
        (tmp_path / name).write_bytes(frame_bytes())
    (tmp_path / "UPPER.FITS").write_bytes(frame_bytes())
    (tmp_path / "mixed.Fit").write_bytes(frame_bytes())

    wait_for(lambda: len(recorder.events) >= 2)
    quiet_for(DEBOUNCE * 3)
    assert sorted(recorder.paths) == [str(tmp_path / "UPPER.FITS"), str(tmp_path / "mixed.Fit")]


@pytest.mark.parametrize("observer", OBSERVERS)
@pytest.mark.parametrize("recursive", [False, True])
def test_subfolders_only_when_recursive(
    tmp_path: Path, recorder: Recorder, watch: Any, observer: str, recursive: bool
) -> None:
    watch(observer=observer, recursive=recursive)
    write_frame(tmp_path / "top.fit")
    sub = tmp_path / "M 42_sub"
    sub.mkdir()
    time.sleep(0.2)  # let inotify add its watch on the new folder before writing into it
    write_frame(sub / "Light_M 42.fit")

    expected = {str(tmp_path / "top.fit")}
    if recursive:
        expected.add(str(sub / "Light_M 42.fit"))
    wait_for(lambda: len(recorder.events) >= len(expected))
    quiet_for(DEBOUNCE * 3)
    assert set(recorder.paths) == expected
    assert len(recorder.paths) == len(expected)


def test_a_broken_file_gives_an_empty_header_and_a_warning(
    tmp_path: Path, recorder: Recorder, watch: Any, logs: list[dict[str, Any]]
) -> None:
    watch(observer="native")
    (tmp_path / "broken.fits").write_bytes(b"this is not FITS at all\n" * 500)

    wait_for(lambda: recorder.events)
    assert recorder.events[0]["header"] == {}
    warning = events_named(logs, "frame.header_unreadable")[0]
    assert warning["path"] == str(tmp_path / "broken.fits")
    assert "not a FITS file" in warning["reason"]
    assert warning["log_level"] == "warning"


@pytest.mark.parametrize("observer", OBSERVERS)
def test_fifo_and_symlinks_named_fits_are_ignored_without_hanging(
    tmp_path: Path, recorder: Recorder, watch: Any, observer: str
) -> None:
    watch(observer=observer)
    os.mkfifo(tmp_path / "pipe.fits")
    (tmp_path / "zero.fits").symlink_to("/dev/zero")
    secret = tmp_path / "private.dat"
    secret.write_bytes(frame_bytes())
    (tmp_path / "leak.fit").symlink_to(secret)
    write_frame(tmp_path / "real.fit")  # proves the watcher kept going past them

    wait_for(lambda: recorder.events)
    quiet_for(DEBOUNCE * 3)
    assert recorder.paths == [str(tmp_path / "real.fit")]


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_start_on_a_missing_path_or_a_file_logs_an_error_and_does_not_start(
    tmp_path: Path, recorder: Recorder, logs: list[dict[str, Any]], kind: str
) -> None:
    path = tmp_path / "nowhere"
    if kind == "file":
        path.write_text("not a folder")
    watcher = ImageWatcher(path, recorder)

    assert watcher.start() is False

    error = events_named(logs, "watcher.path_unusable")[0]
    assert error["log_level"] == "error"
    assert error["path"] == str(path)
    assert not watcher.is_running
    watcher.stop()
    watcher.stop()


def test_stop_is_safe_before_start_and_twice(tmp_path: Path, recorder: Recorder) -> None:
    watcher = ImageWatcher(tmp_path, recorder)
    watcher.stop()
    watcher.stop()
    assert threading.active_count() < 50


def test_no_callback_starts_after_stop_returns(tmp_path: Path, recorder: Recorder) -> None:
    watcher = started(tmp_path, recorder, debounce_delay=0.5, observer="native")
    write_frame(tmp_path / "pending.fit")
    time.sleep(0.1)  # the event is in, its quiet period is not over
    watcher.stop()
    quiet_for(1.0)
    assert recorder.events == []


def test_stop_joins_its_threads(tmp_path: Path, recorder: Recorder) -> None:
    before = {t.ident for t in threading.enumerate()}
    watcher = started(tmp_path, recorder, observer="polling")
    write_frame(tmp_path / "a.fit")
    wait_for(lambda: recorder.events)
    watcher.stop()
    wait_for(lambda: {t.ident for t in threading.enumerate()} <= before, timeout=5)


def test_a_raising_callback_is_logged_and_the_watcher_keeps_working(
    tmp_path: Path, watch: Any, logs: list[dict[str, Any]]
) -> None:
    seen: list[str] = []

    def flaky(event: dict[str, Any]) -> None:
        seen.append(event["path"])
        if len(seen) == 1:
            raise RuntimeError("photometry exploded")

    watch(callback=flaky, observer="native")
    write_frame(tmp_path / "first.fit")
    wait_for(lambda: len(seen) == 1)
    write_frame(tmp_path / "second.fit")
    wait_for(lambda: len(seen) == 2)

    failure = events_named(logs, "watcher.callback_failed")[0]
    assert failure["exc_info"] is True
    assert failure["path"] == str(tmp_path / "first.fit")


def test_an_unchanged_file_touched_again_does_not_fire_twice(
    tmp_path: Path, recorder: Recorder, watch: Any
) -> None:
    watch(observer="native")
    path = write_frame(tmp_path / "once.fit")
    wait_for(lambda: recorder.events)
    with path.open("ab"):
        pass  # IN_CLOSE_WRITE without a change, like a late poll reporting old news
    quiet_for(DEBOUNCE * 3)
    assert len(recorder.events) == 1

    path.write_bytes(frame_bytes(real_header()))  # a new version does fire
    wait_for(lambda: len(recorder.events) == 2)


@pytest.mark.parametrize("observer", OBSERVERS)
def test_a_burst_of_1000_files_gives_1000_callbacks_with_few_threads(
    tmp_path: Path, recorder: Recorder, watch: Any, observer: str
) -> None:
    baseline = threading.active_count()
    peak = [baseline]
    watch(observer=observer, debounce_delay=0.5)
    content = frame_bytes(small_header())
    for i in range(1000):
        (tmp_path / f"burst_{i:04d}.fit").write_bytes(content)
        if i % 50 == 0:
            peak.append(threading.active_count())

    def all_in() -> bool:
        peak.append(threading.active_count())
        return len(recorder.events) >= 1000

    wait_for(all_in, timeout=60)
    quiet_for(DEBOUNCE * 3)
    assert len(recorder.events) == 1000
    assert len(set(recorder.paths)) == 1000
    assert max(peak) <= baseline + 5


def test_polling_looks_only_at_folders_and_fits_names_and_follows_no_link(
    tmp_path: Path,
) -> None:
    from seestar_watch.sources import frame_filter
    from seestar_watch.sources.poller import FolderPoller

    for name in ["a.fit", "b.FITS", "a.jpg", "a_thn.jpg", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "M 42_sub").mkdir()
    (tmp_path / "loop").symlink_to(tmp_path)

    poller = FolderPoller(
        str(tmp_path), recursive=True, wanted=frame_filter(()), interval=60, on_path=print
    )
    poller._list(poller.root, report=False)

    assert sorted(os.path.basename(p) for p in poller._files) == ["a.fit", "b.FITS"]
    assert sorted(poller._folders) == [str(tmp_path), str(tmp_path / "M 42_sub")]


def test_auto_on_a_local_folder_uses_native_events_and_says_why(
    tmp_path: Path, recorder: Recorder, watch: Any, logs: list[dict[str, Any]]
) -> None:
    watcher = watch(observer="auto")
    assert watcher.observer_used == "native"
    started_log = events_named(logs, "watcher.started")[0]
    assert started_log["observer"] == "native"
    assert "local" in started_log["reason"]


def test_a_symlinked_folder_loop_does_not_trap_recursive_polling(
    tmp_path: Path, recorder: Recorder, watch: Any
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "loop").symlink_to(tmp_path)
    watch(observer="polling", recursive=True)
    write_frame(tmp_path / "sub" / "x.fit")
    wait_for(lambda: recorder.events)
    quiet_for(0.5)
    assert recorder.paths == [str(tmp_path / "sub" / "x.fit")]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_as_a_library_it_logs_through_the_standard_logging_module(
    tmp_path: Path, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # a script's logging.basicConfig(...) or pytest's caplog must see what went wrong
    caplog.set_level(logging.INFO)
    assert not ImageWatcher(tmp_path / "missing", recorder).start()
    unusable = [r for r in caplog.records if r.msg.name == "watcher.path_unusable"]
    assert unusable and unusable[0].name.startswith("seestar_watch.")
    assert unusable[0].levelno == logging.ERROR
    assert unusable[0].path == str(tmp_path / "missing")  # type: ignore[attr-defined]
    # and the message itself says which folder and why, whatever formats it
    assert unusable[0].getMessage() == (
        f"watcher.path_unusable path={tmp_path / 'missing'} problem='does not exist'"
    )
    watcher = started(tmp_path, recorder, observer="native")
    try:
        (tmp_path / "not_fits.fit").write_bytes(b"hello" * 1000)
        wait_for(lambda: recorder.events)
        (unreadable,) = [r for r in caplog.records if r.msg.name == "frame.header_unreadable"]
        assert f"path={tmp_path / 'not_fits.fit'}" in unreadable.getMessage()
        assert "reason='not a FITS file" in unreadable.getMessage()
    finally:
        watcher.stop()


def test_a_scripts_own_logging_configuration_shows_which_file_and_why(tmp_path: Path) -> None:
    script = f"""
import logging, time
from seestar_watch import ImageWatcher
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
watcher = ImageWatcher({str(tmp_path)!r}, print, 0.2, observer="polling", poll_interval=0.1)
watcher.start()
open({str(tmp_path / "bad name.fit")!r}, "wb").write(b"not a frame" * 100)
time.sleep(1.5)
watcher.stop()
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    line = next(line for line in done.stderr.splitlines() if "frame.header_unreadable" in line)
    assert line == (
        "WARNING seestar_watch.watcher: frame.header_unreadable"
        f" path='{tmp_path / 'bad name.fit'}' reason='not a FITS file (it does not start with"
        " SIMPLE = T)'"
    )
