"""Browser tests: Playwright driving Debian's Chromium against a real daphne (HTTP and WebSockets)
and real worker processes, all on the test database and the test Redis.

Marked `browser`; each test module declares
`pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.live_server import daphne
from tests.workers import subprocess_env

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="session")
def server_url(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[str]:
    """A daphne serving the ASGI application (pages, static files, WebSockets) on a free port."""
    log = tmp_path_factory.mktemp("daphne") / "daphne.log"
    with django_db_blocker.unblock():
        env = subprocess_env()
    with daphne(log, env) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module. Playwright's sync API leaves its event loop marked as running
    in this thread while it lives, so Django's async-safety check is lifted for exactly that long
    (the tests call the ORM beside it) and the loop is gone before other modules run."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, server_url):
    context = browser.new_context(base_url=server_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    # Assertions wait as long as actions do: a page that updates from live messages on a loaded
    # machine can take more than expect()'s default 5 s; one that never updates still fails.
    expect.set_options(timeout=15_000)
    page = context.new_page()
    yield page
    context.close()


def sign_in(page, username: str, password: str = PASSWORD, next_url: str = "/") -> None:
    page.goto(f"/accounts/login/?next={next_url}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{next_url}")


@pytest.fixture
def owner_page(page, owner):
    """A page signed in as the owner, with the live stream connected."""
    sign_in(page, owner.username)
    page.locator("#live-state[data-state='live']").wait_for()
    return page


def off_the_loop(fn, *args, **kwargs):
    """Call ``fn`` in another thread: Playwright's event loop owns this one, and the services
    publish through ``async_to_sync``, which refuses to run beside a running loop."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    def call():
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()
