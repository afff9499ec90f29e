"""Headless Debian Chromium for the browser tests (test_site.py, test_widget_*.py).

Playwright drives the system's Chromium (``executable_path``: no browser download). Without
Chromium or Playwright a browser test is skipped on a developer's machine and fails under CI
(``$CI`` set), where .ci/run installs both.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def missing(reason: str):
    """Skip on a developer's machine; fail in CI, where .ci/run installs everything needed."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def find_chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@contextlib.contextmanager
def launched():
    """A Playwright browser on the system's Chromium, closed afterwards (or skip / fail)."""
    executable = find_chromium()
    if executable is None:
        missing("Chromium is not installed (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed: run `make book` (installs the 'book' extra)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
