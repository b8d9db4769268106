"""The dashboard rendered in a real headless browser (Debian's chromium and chromedriver)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for, write_frame
from tests.harness import DaemonProcess, Scope, started_daemon
from tests.test_dashboard import HOSTILE, free_port, get

SHOWN = """
const text = (selector) => (document.querySelector(selector) || {}).textContent || "";
const points = {};
for (const path of document.querySelectorAll("svg[data-field] path.points")) {
  const field = path.closest("svg").dataset.field;
  points[field] = (points[field] || 0) + Number(path.dataset.points);
}
return {
  done: text('[data-state="done"] .value'),
  points: points,
  names: [...document.querySelectorAll("#recent td.name")].map((cell) => cell.textContent),
  rows: [...document.querySelectorAll("#recent tbody tr")].map((row) => row.textContent),
  images: document.querySelectorAll("img").length,
  observer: text("#observer"),
  archive: text("#archive"),
  share: text("#share"),
  legend: text("#legend"),
};
"""
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason="no headless browser: apt-get install chromium chromium-driver (.ci/run does)",
    ),
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        # the machine has no network: without these, chromium keeps trying to reach Google
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def served_ledger(scope: Scope) -> Iterator[int]:
    """`seestar-watch dashboard` on the scope's ledger alone; its port, once it answers."""
    port = free_port()
    page = subprocess.Popen(
        [sys.executable, "-m", "seestar_watch", "dashboard", "-c", str(scope.config_path),
         "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def answers() -> bool:
        try:
            return get(port, "/favicon.ico")[0] == 200
        except OSError:  # not listening yet
            return False

    try:
        wait_for(answers, timeout=20)
        yield port
    finally:
        page.terminate()
        page.wait(10)


def test_the_page_shows_the_night_updates_itself_and_runs_no_name_as_html(
    tmp_path: Path, daemons: list[DaemonProcess], browser: Any
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    port = free_port()
    scope = Scope(tmp_path, dashboard={"listen": f"127.0.0.1:{port}"})
    env = {**scope.settings["pipeline"]["env"], "RESULT": '{"stars": 9, "fwhm_arcsec": 3.1}'}
    scope.update(pipeline={"env": env})
    daemon = started_daemon(scope, daemons, until="watcher.started")
    for name in ("a.fit", HOSTILE):
        write_frame(scope.share / "M 42_sub" / name)
    daemon.wait_for_event("pipeline.finished", count=2)

    browser.get(f"http://127.0.0.1:{port}/?refresh=1")
    wait_for(lambda: browser.execute_script("return document.body.dataset.loaded"), timeout=20)
    browser.execute_script("window.notReloaded = true")

    def page() -> dict[str, Any]:
        """What the page shows, read in one go: it redraws itself every second."""
        return dict(browser.execute_script(SHOWN))

    shown = page()
    assert shown["done"] == "2"
    assert shown["points"] == {"stars": 2, "fwhm_arcsec": 2}
    assert HOSTILE in shown["names"]  # shown as text ...
    assert shown["images"] == 0  # ... never made an element
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert  # noqa: B018  (the script would have opened one)
    assert "observer: native" in shown["observer"] and shown["share"] == "share up"
    assert shown["archive"] == "archive: 0.00 GB in 2 copies"  # what the archive holds

    write_frame(scope.share / "M 42_sub" / "c.fit")  # the night goes on
    shown = wait_for(lambda: (s := page())["done"] == "3" and s["points"]["stars"] == 3 and s)
    assert browser.execute_script("return window.notReloaded") is True
    assert len(shown["rows"]) == 3 and "c.fit" in shown["rows"][0]
    assert shown["legend"] == "M 94"  # one series per target (the test frames' OBJECT)
    assert browser.find_element(By.ID, "problem").is_displayed() is False


SHOWN_TIME = """
const ticks = (field) => [...document.querySelectorAll(`svg[data-field="${field}"] text`)]
  .map((t) => t.textContent);
const points = {};
for (const path of document.querySelectorAll("svg[data-field] path.points")) {
  points[path.closest("svg").dataset.field] = Number(path.dataset.points);
}
return {
  points: points,
  snr: ticks("snr").slice(0, 8).filter((t, i) => i % 2 === 0),
  head: [...document.querySelectorAll("#recent thead th")].map((th) => th.textContent),
  failures: [...document.querySelectorAll("#failures tbody tr")].map((row) => row.textContent),
  night: document.getElementById("night").textContent,
};
"""


def test_the_charts_keep_to_the_night_the_frames_were_taken_in(
    tmp_path: Path, browser: Any
) -> None:

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from seestar_watch.ledger import Ledger
    from seestar_watch.sources import Version

    scope = Scope(tmp_path)
    with Ledger.exclusive(scope.ledger) as ledger:  # two nights a year apart, both run tonight
        for n, taken in enumerate(["2025-03-26T21:20:46"] * 3 + ["2026-11-23T22:00:00"] * 5):
            name = f"M 94_sub/Light_{n}.fit"
            ledger.add_pending(Version(name, 100, n), {"OBJECT": "M 94", "DATE-OBS": taken})
            frame = ledger.claim_next()
            assert frame is not None
            result = {"fwhm_px": 4.0 + n / 10, "fwhm_arcsec": 9.5 + n / 4, "snr": 3.0 + n}
            ledger.finish(frame.id, "done", exit_code=0, duration=1.0, result=result)
        ledger.add_pending(Version("M 94_sub/bad.fit", 100, 99), {"DATE-OBS": "2026-11-23T23:00"})
        bad = ledger.claim_next()
        assert bad is not None
        ledger.finish(bad.id, "failed", exit_code=3, reason="exit code 3: no stars")
        ledger.retry_failed(None)  # waiting to run again: still among the failures
    with served_ledger(scope) as port:
        status, headers, _ = get(port, "/favicon.ico")
        assert status == 200 and headers["Content-Type"] == "image/svg+xml"
        browser.get(f"http://127.0.0.1:{port}/?refresh=30")  # no redraw under the pointer
        wait_for(lambda: browser.execute_script("return document.body.dataset.loaded"), timeout=20)
        shown = dict(browser.execute_script(SHOWN_TIME))
        chart = browser.find_element(By.CSS_SELECTOR, 'svg[data-field="snr"]')
        ActionChains(browser).move_to_element(chart).perform()  # hover: the frame under it
        readout = browser.execute_script(
            "return document.querySelector('svg[data-field=snr]').parentNode"
            ".querySelector('.readout').textContent"
        )
    assert shown["points"] == {"fwhm_arcsec": 5, "snr": 5}  # the latest night; one FWHM chart
    assert all(float(tick) >= 0 for tick in shown["snr"]), shown["snr"]  # SNR is never < 0
    assert shown["head"][0] == "taken"  # the recent frames by when they were taken
    assert any("bad.fit" in row and "to retry" in row for row in shown["failures"])
    assert "2026" in shown["night"] and "2025" not in shown["night"]
    assert readout.startswith("M 94 ") and "2026" in readout and "Light_" in readout  # dated


SHOWN_CURVES = """
const curves = {};
for (const box of document.querySelectorAll("#light-curves .light-curve")) {
  const panels = {};
  for (const drawing of box.querySelectorAll("svg[data-kind]")) {
    const ticks = (cls) => [...drawing.querySelectorAll(`text.${cls}`)]
      .map((t) => ({ text: t.textContent, y: Number(t.getAttribute("y")) }));
    panels[drawing.dataset.kind] = {
      points: Number(drawing.querySelector("path.points").dataset.points),
      bars: (drawing.querySelector("path.errors").getAttribute("d").match(/M/g) || []).length,
      left: Number(drawing.querySelector("path.left-out").dataset.leftOut),
      mags: ticks("mag-tick"),
      times: ticks("time-tick").map((t) => t.text),
      title: drawing.querySelector("text").textContent,
    };
  }
  const summary = box.querySelector(".left-out-summary").textContent;
  curves[box.dataset.target] = { panels, leftOut: summary };
}
return {
  visible: !document.getElementById("photometry").hidden,
  curves: curves,
  fields: [...document.querySelectorAll("svg[data-field]")].map((s) => s.dataset.field),
  images: document.querySelectorAll("img").length,
};
"""


def test_light_curves_with_error_bars_the_check_star_left_out_frames_and_the_phase(
    tmp_path: Path, browser: Any
) -> None:
    from seestar_watch.ledger import Ledger
    from seestar_watch.sources import Version

    period, epoch = 0.5668378, 2461000.25
    scope = Scope(tmp_path)
    scope.update(
        photometry={
            "targets": [
                {"name": "RR Lyr", "ra": "19:25:27.91", "dec": "+42:47:03.7",
                 "period": period, "epoch": epoch},
                {"name": HOSTILE, "ra": 10.0, "dec": 20.0},
            ]
        }
    )  # fmt: skip
    first = 2461000.30  # JD; three nights, 9 frames with a magnitude, 3 without
    frames: list[tuple[str, dict[str, Any]]] = []
    for n in range(12):
        jd = first + (n // 4) + (n % 4) * 0.01
        result: dict[str, Any] = {
            "target": "RR Lyr", "mag": 7.5 + 0.3 * math.sin(n), "mag_err": 0.01 + n / 1000,
            "check_name": "000-BBC-123", "check_mag": 9.30 + n / 1000, "check_err": 0.012,
            "airmass": 1.2, "jd": jd, "filter": "TG", "reason": None,
        }  # fmt: skip
        if n % 4 == 3:  # the last of each night left out, with its reason
            why = ["target not in field", "saturated (a pixel at the ADC's limit)"][n // 4 % 2]
            result.update(mag=None, mag_err=None, check_mag=None, reason=why)
        frames.append((f"RR Lyr_sub/Light_{n}.fit", result))
    frames[0][1]["mag_err"] = None
    hostile = {"target": HOSTILE, "mag": 11.0, "mag_err": 0.05, "jd": first, "reason": None}
    frames.append(("x/Light_h.fit", hostile))
    with Ledger.exclusive(scope.ledger) as ledger:
        for n, (name, result) in enumerate(frames):
            start = datetime(1970, 1, 1) + timedelta(days=result["jd"] - 2440587.5 - 5 / 86400)
            taken = start.isoformat(timespec="seconds")  # DATE-OBS: the start, UTC
            ledger.add_pending(Version(name, 100, n), {"OBJECT": "RR Lyr", "DATE-OBS": taken})
            frame = ledger.claim_next()
            assert frame is not None
            ledger.finish(frame.id, "done", exit_code=0, duration=1.0, result=result)
    with served_ledger(scope) as port:
        browser.get(f"http://127.0.0.1:{port}/?refresh=30")
        wait_for(lambda: browser.execute_script("return document.body.dataset.loaded"), timeout=20)
        shown = dict(browser.execute_script(SHOWN_CURVES))

    assert shown["visible"] is True and shown["images"] == 0
    assert set(shown["curves"]) == {"RR Lyr", HOSTILE}  # the hostile name only ever as text
    curve = shown["curves"]["RR Lyr"]
    target, check, phase = (curve["panels"][kind] for kind in ("target", "check", "phase"))
    # every point with its error bar, but the one whose result gives none: no bar, not a 0
    assert target["points"] == 9 and target["bars"] == 8
    assert target["left"] == 3  # the frames with no magnitude, marked
    assert "2 target not in field" in curve["leftOut"] and "1 saturated" in curve["leftOut"]
    mags = target["mags"]  # brighter (smaller) up: the smallest value has the smallest y
    assert float(mags[0]["text"]) < float(mags[-1]["text"]) and mags[0]["y"] < mags[-1]["y"]
    assert any(re.search(r"[A-Za-z]{3}", t) for t in target["times"]), target["times"]  # dated
    assert check["points"] == 9 and check["title"] == "check 000-BBC-123"
    assert phase["points"] == 9 and phase["times"] == ["0.00", "0.33", "0.67", "1.00"]
    assert len(target["times"]) == 3  # dated ticks: three fit
    assert f"P = {period} d" in phase["title"]
    assert "phase" not in shown["curves"][HOSTILE]["panels"]  # no period: no folded curve
    assert "airmass" in shown["fields"]  # the other numbers keep their charts ...
    assert not {"mag", "jd", "check_mag"} & set(shown["fields"])  # ... the curves are not twice


FLEET_SHOWN = """
const rows = [...document.querySelectorAll("#fleet-summary tbody tr")];
return {
  rows: rows.map((row) => [row.dataset.scope, ...[...row.cells].map((c) => c.textContent)]),
  frames: [...document.querySelectorAll("#fleet iframe")].map((f) => {
    const inner = f.contentDocument;  // null, or a blank page with no body, while it loads
    const loaded = inner && inner.body && inner.body.dataset.loaded;
    return loaded ? inner.querySelector('[data-state="done"] .value').textContent : null;
  }),
  images: document.querySelectorAll("img").length,
};
"""


def test_one_page_shows_several_telescopes_side_by_side(tmp_path: Path, browser: Any) -> None:
    from seestar_watch.ledger import Ledger
    from seestar_watch.sources import Version

    scopes = []
    for name, done in (("north", 2), ("south", 1)):
        scope = Scope(tmp_path / name)
        with Ledger.exclusive(scope.ledger) as ledger:
            for n in range(done):
                ledger.add_pending(Version(f"M 42_sub/{name}{n}{HOSTILE}", 100, n), {})
                frame = ledger.claim_next()
                assert frame is not None
                ledger.finish(frame.id, "done", exit_code=0, duration=1.0)
        scope.config_path.write_text(scope.config_path.read_text() + f"scope: {name}\n")
        scopes.append(scope)
    port = free_port()
    page = subprocess.Popen(
        [sys.executable, "-m", "seestar_watch", "dashboard", "--listen", f"127.0.0.1:{port}",
         *[argument for scope in scopes for argument in ("-c", str(scope.config_path))]],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: _answers(port), timeout=20)
        browser.get(f"http://127.0.0.1:{port}/")

        def shown() -> dict[str, Any] | None:
            seen = dict(browser.execute_script(FLEET_SHOWN))
            return seen if len(seen["rows"]) == 2 and None not in seen["frames"] else None

        seen = wait_for(shown, timeout=30)
    finally:
        page.terminate()
        page.wait(10)
    north, south = seen["rows"]
    assert north[:2] == ["north", "north"] and north[4:6] == ["2", "0"]
    assert south[:2] == ["south", "south"] and south[4] == "1"
    assert north[2] == "daemon not running"  # no daemon ran these ledgers
    assert HOSTILE in north[6]  # the last frame's name, as text
    assert seen["frames"] == ["2", "1"]  # each telescope's own page, side by side
    assert seen["images"] == 0


def _answers(port: int) -> bool:
    try:
        return get(port, "/favicon.ico")[0] == 200
    except OSError:
        return False
