"""The dashboard rendered in a real headless browser (Debian's chromium and chromedriver)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for, write_frame
from tests.harness import DaemonProcess, Scope, started_daemon
from tests.test_dashboard import HOSTILE, free_port

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
