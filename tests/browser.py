"""A real headless Chromium for the pages a person opens (the HTML reports).

Debian's ``chromium`` (``make chromium`` installs it), driven through the Chrome
DevTools Protocol by playwright's Python package, which is told where the browser
is and downloads none. Every request the page makes is recorded, and any that is
not the report file itself is aborted, so a page that reaches for the network
fails its test instead of hanging or passing on a machine that is online.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")
#: Without the background-networking flags Chromium tries to reach Google's servers at start.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Where the reports and their screenshots are written for a person to look at (gitignored).
SHOTS = ROOT / ".html-reports"


def why_no_browser() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: run `make chromium` (as root on Debian) to run the browser tests"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (make install)"
    return None


@dataclass
class OpenedPage:
    """A report opened in the browser, with what happened while it loaded."""

    page: Any
    console: list[str] = field(default_factory=list)  # console messages of type error or warning
    errors: list[str] = field(default_factory=list)  # uncaught page errors
    requests: list[str] = field(default_factory=list)  # every URL asked for
    blocked: list[str] = field(default_factory=list)  # requests that would have left the file

    def count(self, selector: str) -> int:
        return int(self.page.locator(selector).count())

    def screenshot(self, name: str) -> Path:
        SHOTS.mkdir(exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


class Browser:
    """One Chromium for a test module; ``open`` gives each report a fresh page."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        self._driver = sync_playwright().start()
        # launch() gives the browser a fresh, temporary --user-data-dir of its own.
        self._browser = self._driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)

    def open(self, path: Path, *, width: int = 1280) -> OpenedPage:
        page = self._browser.new_page(viewport={"width": width, "height": 900})
        opened = OpenedPage(page)
        target = path.resolve().as_uri()
        page.on("console", lambda m: opened.console.append(f"{m.type}: {m.text}") if m.type != "log" else None)
        page.on("pageerror", lambda e: opened.errors.append(str(e)))
        page.on("request", lambda r: opened.requests.append(r.url))

        def guard(route: Any) -> None:
            if route.request.url == target:
                route.continue_()
            else:
                opened.blocked.append(route.request.url)
                route.abort()

        page.route("**/*", guard)
        page.goto(target, wait_until="load")
        return opened

    def close(self) -> None:
        self._browser.close()
        self._driver.stop()


def keep_copy(report: Path, name: str) -> Path:
    """The report beside its screenshot, for a person to open."""
    SHOTS.mkdir(exist_ok=True)
    copy = SHOTS / f"{name}.html"
    shutil.copyfile(report, copy)
    return copy
