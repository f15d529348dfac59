"""A headless Chromium for the page tests: Debian's own browser driven by Playwright.

Playwright's bundled browsers are never downloaded (`playwright install` is not run);
the tests drive `/usr/bin/chromium` from Debian's `chromium` package.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Where the screenshots of the pages go (beside the benchmarks' figures).
SHOTS = Path(__file__).resolve().parents[2] / "bench"


@contextmanager
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("the page tests need Debian's chromium: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Console:
    """What a page reported as going wrong: console errors and uncaught exceptions."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", self._message)
        page.on("pageerror", lambda err: self.errors.append(f"uncaught: {err}"))

    def _message(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def besides(self, *expected: str) -> list[str]:
        """The errors that are none of the expected ones (text fragments)."""
        return [e for e in self.errors if not any(fragment in e for fragment in expected)]


def open_page(browser: Browser, width: int = 1400, height: int = 900) -> tuple[Page, Console]:
    page = browser.new_page(viewport={"width": width, "height": height})
    # Waits are the tests' own (`expect(..., timeout=)`); nothing may hang a test longer.
    page.set_default_timeout(15_000)
    console = Console()
    console.watch(page)
    return page, console


def dev_token(base_url: str, role: str, sub: str) -> str:
    answer = httpx.post(
        f"{base_url}/v1/auth/dev-token", json={"role": role, "sub": sub}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["token"]
    return token


def shot(page: Page, name: str) -> Path:
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / name
    page.screenshot(path=str(path))
    return path
