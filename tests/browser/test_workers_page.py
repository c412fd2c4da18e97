"""The workers page in a real browser: two real workers, one killed with SIGKILL while it runs a task."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tasks_app.models import Run, RunStatus, WorkerProcess
from tasks_app.services import execution, reconcile

from .conftest import off_the_loop, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def card(page, name: str):
    return page.locator(f"article[data-worker='{name}']")


def test_a_killed_worker_is_shown_lost_with_what_auto_resume_did(page, operator, owner, workers):
    started = workers.start(2, args=["--concurrency", "1"])
    sig = off_the_loop(execution.submit, {"task": "examples.sleep", "kwargs": {"seconds": 120}}, owner=owner)
    first = workers.drain(lambda: Run.objects.filter(signature=sig, status=RunStatus.RUNNING).first(), timeout=60)
    victim = first.worker_name
    victim_pid = WorkerProcess.objects.get(name=victim).pid
    [survivor] = [w.name for w in WorkerProcess.objects.exclude(name=victim)]

    sign_in(page, operator.username, next_url="/workers/")
    expect(page.get_by_role("link", name="Workers")).to_have_attribute("aria-current", "page")
    expect(card(page, victim).locator("[data-current-tasks]")).to_contain_text(f"#{sig.pk}")
    expect(card(page, victim).locator("[data-worker-pid]")).to_have_text(str(victim_pid))
    expect(card(page, victim).locator("[data-worker-slots]")).to_have_text("1 of 1 in use")
    expect(card(page, survivor)).to_contain_text("Idle.")
    expect(page.locator("tr[data-queue='orchestrator-medium']")).to_be_visible()
    page.evaluate("window.__notReloaded = true")

    workers.kill(next(p for p in started if p.pid == victim_pid))

    # The page notices by itself: the heartbeat row stays, but the process is gone.
    expect(card(page, victim)).to_have_attribute("data-worker-state", "lost")
    expect(card(page, victim).locator("[data-worker-badge]")).to_have_text("lost")
    expect(card(page, victim).locator("[data-auto-resume] li[data-outcome='waiting']")).to_contain_text(f"#{sig.pk}")
    expect(card(page, survivor)).not_to_have_attribute("data-worker-state", "lost")
    expect(page.locator("#workers-summary")).to_contain_text("1 worker alive · 1 lost")

    off_the_loop(reconcile.run_pass, trigger="periodic")

    resumed = card(page, victim).locator("[data-auto-resume] li[data-outcome='resumed']")
    expect(resumed).to_contain_text(re.compile(rf"#{sig.pk} .*run 1 — resumed as run 2: running on {survivor}", re.S),
                                    timeout=30_000)
    expect(card(page, survivor).locator("[data-current-tasks]")).to_contain_text(f"#{sig.pk}")
    expect(card(page, survivor)).to_have_attribute("data-worker-state", "busy")
    assert page.evaluate("window.__notReloaded") is True

    resumed.get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"/tasks/{sig.pk}/$"))
