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

    def done_count() -> str:
        card = browser.find_element(By.CSS_SELECTOR, '[data-state="done"] .value')
        return str(card.text)

    def points(field: str) -> int:
        drawn = browser.find_elements(By.CSS_SELECTOR, f'svg[data-field="{field}"] path.points')
        return sum(int(path.get_attribute("data-points")) for path in drawn)

    assert done_count() == "2"
    assert points("stars") == 2 and points("fwhm_arcsec") == 2
    names = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#recent td.name")]
    assert HOSTILE in names  # shown as text ...
    assert browser.find_elements(By.TAG_NAME, "img") == []  # ... never made an element
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert  # noqa: B018  (the script would have opened one)
    assert "observer: native" in browser.find_element(By.ID, "observer").text
    assert browser.find_element(By.ID, "share").text == "share up"

    write_frame(scope.share / "M 42_sub" / "c.fit")  # the night goes on
    wait_for(lambda: done_count() == "3" and points("stars") == 3, timeout=30)
    assert browser.execute_script("return window.notReloaded") is True
    rows = browser.find_elements(By.CSS_SELECTOR, "#recent tbody tr")
    assert len(rows) == 3 and "c.fit" in rows[0].text
    legend = browser.find_element(By.ID, "legend").text
    assert legend == "M 94"  # one series per target (the test frames' OBJECT)
