"""The Schedules page in a real browser whose zone is Asia/Tokyo: create a schedule in the form, see
its next run in the browser's zone, run it now on a real worker and see the run end, live."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from tasks_app.models import Schedule, Signature

from .conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def tokyo_page(browser, server_url):
    context = browser.new_context(base_url=server_url, viewport={"width": 1280, "height": 900},
                                  timezone_id="Asia/Tokyo")
    context.set_default_timeout(15_000)
    expect.set_options(timeout=15_000)
    page = context.new_page()
    yield page
    context.close()


def test_create_a_schedule_see_its_next_run_in_my_zone_and_a_run_with_its_status(tokyo_page, owner, workers):
    page = tokyo_page
    workers.start(1)
    sign_in(page, owner.username, next_url="/schedules/")
    expect(page.get_by_role("link", name="Schedules")).to_have_attribute("aria-current", "page")
    expect(page.get_by_label("Time zone")).to_have_value("Asia/Tokyo")  # the browser's zone, to start with

    page.get_by_label("Name").fill("morning report")
    page.get_by_label("Spec").fill('{"task": "examples.echo", "kwargs": {"value": 5}}')
    page.get_by_label("Cron").fill("0 9 * * 1-5")
    page.get_by_label("Time zone").fill("Europe/Paris")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.locator("#messages")).to_contain_text("Schedule “morning report” created.")

    schedule = Schedule.objects.get()
    row = page.locator(f"#schedule-{schedule.pk}")
    in_tokyo = schedule.next_run_at.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M:%S")
    assert in_tokyo[11:] in ("16:00:00", "17:00:00")  # 09:00 in Paris: 16:00 in Tokyo in summer, 17:00 in winter
    expect(row.locator("[data-next-run] time")).to_have_text(in_tokyo)
    expect(page.locator("[data-browser-zone]")).to_have_text("Asia/Tokyo")
    expect(row.locator("[data-last-runs]")).to_contain_text("no run yet")

    row.get_by_role("button", name="Run now").click()
    expect(row.locator("[data-last-runs]")).to_contain_text("#")
    run = Signature.objects.get(schedule=schedule)
    expect(row.locator(f"[data-status-task='{run.pk}']")).to_contain_text("completed", timeout=30_000)
    assert Signature.objects.get(pk=run.pk).result == 5

    row.get_by_role("button", name="Pause").click()
    expect(row.locator("[data-next-run]")).to_have_text("paused")
    row.get_by_role("link", name=f"#{run.pk}").click()
    expect(page.locator("#task-schedule")).to_contain_text("morning report")
