"""What a person does in the web UI, in a real browser against daphne, workers and Redis."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tasks_app.models import LogEntry, Notification, Run, RunStatus, Signature, Status
from tasks_app.services import execution, live, notifications

from .conftest import off_the_loop, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def status_badge(page, sig: Signature):
    return page.locator(f"#task-header [data-status-task='{sig.pk}']")


def test_sign_in_and_out(page, owner):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    page.get_by_label("Username").fill("owner")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("didn't match")).to_be_visible()
    sign_in(page, "owner")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.locator("#live-state")).to_have_text("● live")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))


def test_run_the_crm_demo_and_watch_it_live_pause_and_resume(owner_page, owner, workers):
    page = owner_page
    workers.start(1)
    page.goto("/tasks/new/")
    page.get_by_label("Task:", exact=True).select_option("examples.build_crm")
    page.get_by_label("seconds_per_item").fill("0.4")
    page.get_by_role("button", name="Run").click()
    expect(page).to_have_url(re.compile(r"/tasks/\d+/$"))
    sig = Signature.objects.get(owner=owner)
    page.evaluate("window.__notReloaded = true")

    steps = page.locator("#task-progress .steps > li")
    expect(steps).to_have_count(4)
    expect(steps.nth(0)).to_have_attribute("data-step-status", "completed", timeout=20_000)
    expect(page.locator("[data-step-line]")).to_contain_text("Step 2 of 4: Generate application UI")
    expect(page.locator("#task-progress .substep").first).to_have_attribute("data-substep-status", "completed")
    assert int(page.locator("#task-progress [role=progressbar]").get_attribute("aria-valuenow")) > 0

    page.locator("#action-pause").click()
    expect(status_badge(page, sig)).to_contain_text("paused")
    workers.drain(lambda: Run.objects.filter(signature=sig, status=RunStatus.PAUSED).exists())
    expect(page.locator("#task-progress .steps")).to_contain_text("⏸")

    page.locator("#action-resume").click()
    expect(status_badge(page, sig)).to_contain_text("completed", timeout=30_000)
    expect(page.locator("[data-step-line]")).to_have_text("All 4 steps done")
    expect(page.locator("#task-progress .pct")).to_have_text("100%")
    expect(page.locator("#task-progress .steps > li[data-step-status='completed']")).to_have_count(4)
    expect(page.locator("#task-result")).to_contain_text('"title": "Cellphone Store CRM"')
    assert page.evaluate("window.__notReloaded") is True


def test_interrupt_a_sleeping_task(owner_page, owner, workers):
    page = owner_page
    workers.start(1)
    sig = off_the_loop(execution.submit, {"task": "examples.sleep", "kwargs": {"seconds": 3600}}, owner=owner)
    page.goto(f"/tasks/{sig.pk}/")
    # The worker first (its output is shown if it never starts the task), then the page.
    workers.drain(lambda: Run.objects.filter(signature=sig, status=RunStatus.RUNNING).exists(), timeout=60)
    expect(status_badge(page, sig)).to_contain_text("running")
    page.locator("#action-interrupt").click()
    expect(status_badge(page, sig)).to_contain_text("interrupted")
    expect(page.locator("#messages")).to_contain_text("interrupted.")
    expect(page.locator("#action-resume")).to_be_visible()
    workers.drain(lambda: Run.objects.filter(signature=sig, status=RunStatus.INTERRUPTED).exists())


def test_a_status_change_during_a_slow_header_refresh_is_not_lost(owner_page, owner):
    """The header's partial is re-fetched on each status message; when the next message comes while
    that answer is still on its way, the older answer must not be the last word."""
    page = owner_page
    sig = off_the_loop(execution.submit, {"task": "examples.noop"}, owner=owner, run=False)
    page.goto(f"/tasks/{sig.pk}/")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    expect(status_badge(page, sig)).to_contain_text("pending")

    def set_status(status: str) -> None:
        Signature.objects.filter(pk=sig.pk).update(status=status)
        live.publish(sig, "status", status=status)

    landed = []

    def slow_first_answer(route):
        if landed:
            route.continue_()
            return
        answer = route.fetch()  # the header as it is now: running
        off_the_loop(set_status, Status.COMPLETED)
        page.wait_for_timeout(1500)  # meanwhile the header's 500 ms throttle asks again
        route.fulfill(response=answer)
        landed.append(answer.status)

    page.route(re.compile(rf"/tasks/{sig.pk}/\?partial=header$"), slow_first_answer)
    off_the_loop(set_status, Status.RUNNING)
    for _ in range(300):
        if landed:
            break
        page.wait_for_timeout(100)
    assert landed == [200]
    expect(status_badge(page, sig)).to_contain_text("completed")


def test_an_active_task_header_is_read_again_even_when_a_status_message_is_lost(owner_page, owner):
    page = owner_page
    sig = off_the_loop(execution.submit, {"task": "examples.noop"}, owner=owner, run=False)
    page.goto(f"/tasks/{sig.pk}/")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    expect(status_badge(page, sig)).to_contain_text("pending")
    # The status changes and no message says so (as when pub/sub drops one): the 10 s poll shows it.
    off_the_loop(lambda: Signature.objects.filter(pk=sig.pk).update(status=Status.RUNNING))
    expect(status_badge(page, sig)).to_contain_text("running", timeout=15_000)
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")


def test_cancel_asks_for_confirmation_in_a_dialog(owner_page, owner):
    page = owner_page
    sig = execution.submit({"task": "examples.echo", "name": "throwaway"}, owner=owner, run=False)
    page.goto(f"/tasks/{sig.pk}/")
    page.locator("#action-cancel").click()
    dialog = page.locator("#cancel-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    assert Signature.objects.filter(pk=sig.pk).exists()

    page.locator("#action-cancel").click()
    page.keyboard.press("Escape")  # the dialog is keyboard-usable
    expect(dialog).to_be_hidden()
    page.locator("#action-cancel").click()
    dialog.get_by_role("button", name="Cancel and delete").click()
    expect(page).to_have_url(re.compile(r"/tasks/$"))
    expect(page.locator("#messages")).to_contain_text(f"#{sig.pk} throwaway: cancelled and deleted.")
    assert not Signature.objects.filter(pk=sig.pk).exists()


def test_filter_the_list_and_act_on_selected_rows(owner_page, owner):
    page = owner_page
    for name in ("invoice run", "invoice export", "report build"):
        execution.submit({"task": "examples.echo", "name": name}, owner=owner, run=False)
    page.goto("/tasks/")
    rows = page.locator("#results tbody tr[data-task-row]")
    expect(rows).to_have_count(3)
    page.get_by_label("Search").fill("invoice")
    expect(rows).to_have_count(2)
    expect(page).to_have_url(re.compile(r"q=invoice"))
    page.locator("[data-select-all]").check()
    expect(page.locator("[data-selected-count]")).to_have_text("2 selected")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#messages")).to_contain_text("2 tasks paused")
    expect(page).to_have_url(re.compile(r"q=invoice"))
    page.get_by_label("Status").select_option("paused")
    expect(rows).to_have_count(2)
    expect(page).to_have_url(re.compile(r"status=paused"))


def test_search_logs_and_see_new_lines_live(owner_page, owner):
    page = owner_page
    sig = execution.submit({"task": "examples.log", "kwargs": {"lines": 3}}, owner=owner, run=False)
    for i in range(1, 21):
        LogEntry.objects.create(signature=sig, level=40 if i == 7 else 20, message=f"line {i} of 20")
    page.goto(f"/tasks/{sig.pk}/logs/")
    lines = page.locator("#log-entries .log-tail li")
    expect(lines).to_have_count(20)
    page.get_by_label("Search").fill("line 7")
    expect(lines).to_have_count(1)
    expect(lines.first).to_contain_text("ERROR")
    page.get_by_label("Search").fill("")
    page.get_by_label("Level").select_option("ERROR")
    expect(lines).to_have_count(1)
    expect(page).to_have_url(re.compile(r"level=ERROR"))
    page.get_by_label("Level").select_option("")
    expect(lines).to_have_count(20)

    entry = LogEntry(signature=sig, level=30, message="a fresh warning")
    off_the_loop(live.log_lines, sig.pk, owner.pk, [entry])
    expect(lines).to_have_count(21)
    expect(lines.last).to_contain_text("a fresh warning")
    href = page.get_by_role("link", name="CSV").get_attribute("href")
    assert href.startswith(f"/tasks/{sig.pk}/logs/export/?") and "format=csv" in href


def test_a_notification_rings_the_bell_and_the_desktop(page, owner):
    page.add_init_script("""
        window.__desktop = [];
        window.Notification = class { constructor(title, options) { window.__desktop.push([title, options.body]); } };
        window.Notification.permission = "granted";
        window.Notification.requestPermission = () => Promise.resolve("granted");
    """)
    sign_in(page, owner.username)
    page.locator("#live-state[data-state='live']").wait_for()
    bell = page.locator("#bell .bell-count")
    expect(bell).to_have_text("0")
    sig = execution.submit({"task": "examples.build_crm"}, owner=owner, run=False)
    row = Notification.objects.create(
        owner=owner, signature=sig, event="task_completed", title="✅ Your CRM is ready!",
        body="Cellphone Store CRM finished.", deliveries={"in_app": "sent", "browser": "queued"},
    )
    off_the_loop(notifications.deliver, row.pk)
    expect(bell).to_have_text("1")
    page.wait_for_function("window.__desktop.length === 1")
    assert page.evaluate("window.__desktop") == [["✅ Your CRM is ready!", "Cellphone Store CRM finished."]]
    page.locator("#bell").click()
    expect(page.get_by_text("✅ Your CRM is ready!")).to_be_visible()
    page.get_by_role("button", name="Mark all read").click()
    expect(bell).to_have_text("0")


def test_the_chat_panel_posts_to_the_chat_api(owner_page):
    page = owner_page
    sent = []

    def answer(route):
        sent.append((route.request.headers, route.request.post_data))
        route.fulfill(status=200, content_type="application/json",
                      body=json.dumps({"reply": "Your Cellphone Store CRM task is 65% complete."}))

    page.route("**/api/chat/", answer)
    page.get_by_role("button", name="Ask").click()
    page.get_by_label("Message").fill("How's my CRM task going?")
    page.keyboard.press("Enter")
    expect(page.locator(".chat-log .chat-bot")).to_have_text("Your Cellphone Store CRM task is 65% complete.")
    headers, body = sent[0]
    assert json.loads(body) == {"message": "How's my CRM task going?"}
    assert headers["content-type"] == "application/json" and headers.get("x-csrftoken")


def test_the_dashboard_draws_its_charts(owner_page, owner):
    page = owner_page
    execution.submit({"task": "examples.echo"}, owner=owner, run=False)
    page.goto("/")
    expect(page.locator("[data-metrics-url]")).to_have_attribute("data-loaded", "true")
    assert page.evaluate("Object.keys(Chart.instances).length") == 4
    expect(page.locator("[data-count-status='pending']")).to_have_text("1")
    assert Status.PENDING == "pending"
