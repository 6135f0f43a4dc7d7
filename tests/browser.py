"""pytest plugin: headless Debian Chromium driven by Playwright, for the browser tests.

Chromium comes from Debian (`make system-deps`), never a Playwright download; the
flags keep it off the network, which this machine does not reach anyway.
"""

from __future__ import annotations

import re
import shutil

import pytest
from playwright import sync_api as playwright_api

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "pw-for-tests-1"


@pytest.fixture(scope="session")
def _chromium_installed():
    # Fail, not skip: `make test` installs Chromium (deploy/system-deps.sh).
    if shutil.which(CHROMIUM) is None:
        pytest.fail("Debian Chromium is not installed; run `make system-deps`", pytrace=False)


@pytest.fixture(scope="module")  # the Playwright loop ends with each module
def browser(_chromium_installed):
    # Playwright's sync API runs an event loop in the test thread; the ORM calls in test
    # bodies are still synchronous and safe. Only while a browser is open (a module-scoped
    # monkeypatch, undone when the module's tests end), so no other test sees the switch;
    # child processes never get it (tests.conftest.subprocess_environ).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield from _launch()


def _launch():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser):
    contexts = []

    def make(**options):
        options.setdefault("viewport", {"width": 1280, "height": 900})
        context = browser.new_context(**options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def sign_in(page, live_server, email: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("form button[type=submit], form input[type=submit]").last.click()
    page.wait_for_url(re.compile(r"^(?!.*/accounts/login/).*$"))
