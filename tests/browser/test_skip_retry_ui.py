"""Skip and Edit and retry on the task page, in a real browser against daphne, workers and Redis."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tasks_app.models import Event, Signature, Status
from tasks_app.services import execution

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

OLD = {"title": "Old Shop CRM", "seconds_per_item": 0.05, "fail_step": "Add search and filters"}


def test_edit_and_retry_shows_the_old_arguments_and_runs_with_the_new_ones(owner_page, owner, workers):
    page = owner_page
    sig = execution.submit({"task": "examples.build_crm", "kwargs": OLD}, owner=owner)
    workers.burst()
    assert Signature.objects.get(pk=sig.pk).status == Status.FAILED
    workers.start(1)

    page.goto(f"/tasks/{sig.pk}/")
    expect(page.locator("#action-skip")).to_be_visible()  # a failed step: skipping is offered
    page.locator("#action-edit-retry").click()
    expect(page).to_have_url(re.compile(rf"/tasks/{sig.pk}/retry/edit/$"))
    form = page.locator("#retry-form")
    expect(form.locator("#id_kw_title")).to_have_value("Old Shop CRM")
    expect(form.locator("#id_kw_seconds_per_item")).to_have_value("0.05")
    expect(form.locator("#id_kw_fail_step")).to_have_value("Add search and filters")
    expect(form.locator("#id_kw_approval")).to_have_value("false")  # its default, as on New task

    form.locator("#id_kw_title").fill("New Shop CRM")
    form.locator("#id_kw_fail_step").fill("")
    form.get_by_label("Start over").check()
    page.locator("#submit-retry").click()

    expect(page).to_have_url(re.compile(rf"/tasks/{sig.pk}/$"))
    expect(page.locator(f"#task-header [data-status-task='{sig.pk}']")).to_contain_text("completed", timeout=30_000)
    expect(page.locator("#task-result")).to_contain_text('"title": "New Shop CRM"')
    expect(page.locator("#action-skip")).to_have_count(0)  # nothing left to skip
    retried = Event.objects.get(signature_ref=sig.pk, type="retried").data
    assert retried["from_start"] is True
    assert retried["old_kwargs"] == OLD
    # The form sends what it shows, the approval select's default included (as New task does).
    assert retried["new_kwargs"] == {"title": "New Shop CRM", "seconds_per_item": 0.05, "approval": False}


def test_skip_a_failed_step_from_the_page(owner_page, owner, workers):
    page = owner_page
    sig = execution.submit({"task": "examples.build_crm", "kwargs": OLD}, owner=owner)
    workers.burst()
    workers.start(1)

    page.goto(f"/tasks/{sig.pk}/")
    page.locator("#action-skip").click()

    expect(page.locator(f"#task-header [data-status-task='{sig.pk}']")).to_contain_text("completed", timeout=30_000)
    expect(page.locator("#task-progress [data-step='3']")).to_have_attribute("data-step-status", "skipped")
    expect(page.locator("#task-progress .steps > li[data-step-status='completed']")).to_have_count(3)
