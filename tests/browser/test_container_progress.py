"""A swarm's page in a real browser: its own bar and "N of M members done" move while members run."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tasks_app.models import Signature, Status
from tasks_app.services import execution

from .conftest import off_the_loop

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_swarms_bar_and_counter_move_before_it_ends(owner_page, owner, workers):
    page = owner_page
    workers.start(2)
    spec = {"kind": "swarm", "max_concurrency": 2,
            "tasks": [{"task": "examples.sleep", "kwargs": {"seconds": 2}} for _ in range(8)]}
    swarm = off_the_loop(execution.submit, spec, owner=owner, run=False)
    page.goto(f"/tasks/{swarm.pk}/")
    bar = page.locator("#task-progress [role=progressbar]")
    counter = page.locator("#task-progress [data-step-line]")
    expect(counter).to_have_text("0 of 8 members done")
    page.evaluate("window.__notReloaded = true")
    page.locator("#action-start").click()

    bars, counters = [], []
    deadline = time.monotonic() + 60
    while off_the_loop(lambda: Signature.objects.get(pk=swarm.pk).status) != Status.COMPLETED:
        assert time.monotonic() < deadline, f"the swarm did not end; the page showed {bars} and {counters}"
        for seen, value in ((bars, bar.get_attribute("aria-valuenow")), (counters, counter.text_content())):
            if not seen or seen[-1] != value:
                seen.append(value)
        page.wait_for_timeout(100)

    # Before the last member ended: the first value shown and three moves at least, never backwards.
    running_bars = [int(v) for v in bars if int(v) < 100]
    running_counters = [c for c in counters if not c.startswith("8 of 8")]
    assert len(running_bars) >= 4 and len(running_counters) >= 4, (bars, counters)
    assert running_bars == sorted(running_bars)
    expect(counter).to_have_text("8 of 8 members done")
    expect(page.locator("#task-progress .pct")).to_have_text("100%")
    assert page.evaluate("window.__notReloaded") is True
