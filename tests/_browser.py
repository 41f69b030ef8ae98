"""Debian's Chromium, driven by Playwright, as every browser test launches it (a test tool's
own browser download cannot work here)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: no GPU; WebGL (Plotly's parallel coordinates) then needs SwiftShader: ``webgl=True``
_QUIET = [
    "--headless",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@contextmanager
def chromium(*, webgl: bool = False) -> Iterator[Browser]:
    assert os.path.exists(CHROMIUM), (
        f"Chromium is not installed at {CHROMIUM}; install Debian's package: "
        "apt-get install -y chromium"
    )
    graphics = (
        ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"] if webgl else ["--disable-gpu"]
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=_QUIET + graphics)
        try:
            yield browser
        finally:
            browser.close()
