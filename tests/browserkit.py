"""Headless Chromium for the browser tests (the HTML report, the review page): Debian's
chromium + chromium-driver, installed by scripts/setup.sh with DOCTRIAGE_SETUP_BROWSER=1
(.ci/run sets it); a test is skipped where they are missing."""

from __future__ import annotations

import shutil
from typing import Any

import pytest


def chromium() -> Any:
    """A headless Chromium WebDriver; the caller quits it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("headless Chromium not installed (Debian packages chromium, chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)
