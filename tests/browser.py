"""A headless Chromium for the slow browser tests, driven by Playwright.

Debian's Chromium (`make browser` installs the packages chromium and chromium-driver) is used, never a
browser downloaded by Playwright. A missing browser fails the test with the command that installs it: a
browser test is never skipped into a pass.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

CHROMIUM = os.environ.get("ACEFORGE_CHROMIUM", "/usr/bin/chromium")
# the closed network refuses Chromium's background connections: turn them off
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def chromium_page(width: int = 1366, height: int = 768) -> Iterator[tuple[object, list[str]]]:
    """(page, console_errors): a fresh browser profile at a laptop's screen size; console errors and
    uncaught page errors are collected in the list."""
    import pytest

    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make browser` (Debian packages chromium, chromium-driver)")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": width, "height": height})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, errors
        finally:
            context.close()
