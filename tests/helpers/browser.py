"""Headless Chromium through Selenium (Debian's chromium and chromium-driver packages; .ci/run installs them), for
the tests that load the web page and compare what it computes with the server."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1100,1500",
)


@contextlib.contextmanager
def headless_chromium() -> Iterator:
    """A Selenium driver of a headless Chromium with a fresh profile, quit and its profile removed at the end; the
    test is skipped, saying why, where Chromium or its driver is not installed."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(
            f"headless Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}): apt-get install -y chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dermsweep-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_js(driver, js: str, timeout: float = 60.0):
    """The first truthy value of the script `js` in the page, polled every 0.1 s; fails with the page's text."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(js)
        if value:
            return value
        time.sleep(0.1)
    page = driver.execute_script("return document.body.innerText")
    raise AssertionError(f"timed out waiting for {js!r}; page says:\n{page}")
