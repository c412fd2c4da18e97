"""The web pages (Django test client): who sees what, filters in the URL, controls and their
refusals as messages, HTMX partials. Signatures are created with ``run=False`` (or left pending),
so nothing here needs a worker."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tasks_app.models import (
    Approval,
    LogEntry,
    Notification,
    NotificationPreference,
    Signature,
    Status,
    Step,
    StepStatus,
)
from tasks_app.services import deletion, execution, lifecycle, metrics, progress
from tasks_app.views import task_list

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def web(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def submit(owner, spec: dict | None = None, **extra) -> Signature:
    return execution.submit(spec or {"task": "examples.echo", "kwargs": {"value": 1}, **extra}, owner=owner, run=False)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def set_status(sig: Signature, status: str, **fields) -> Signature:
    """Test set-up only: put a row in a state the services would reach with a worker."""
    Signature.objects.filter(pk=sig.pk).update(status=status, **fields)
    sig.refresh_from_db()
    return sig


@pytest.fixture
def crm(owner) -> Signature:
    sig = submit(owner, {"task": "examples.build_crm", "name": "Cellphone Store CRM"})
    now = timezone.now()
    set_status(sig, Status.RUNNING, started_at=now - timezone.timedelta(minutes=2), progress=37.5)
    Step.objects.create(signature=sig, order=1, name="Create database tables", status=StepStatus.COMPLETED,
                        progress=100, started_at=now - timezone.timedelta(minutes=2), finished_at=now)
    Step.objects.create(
        signature=sig, order=2, name="Generate application UI", status=StepStatus.RUNNING, progress=50,
        started_at=now,
        substeps=[{"name": "Customer list view", "done": True}, {"name": "Product list view", "done": True},
                  {"name": "Sales form", "done": False}, {"name": "Repair board", "done": False}],
    )
    Step.objects.create(signature=sig, order=3, name="Add search and filters")
    Step.objects.create(signature=sig, order=4, name="Configure workflows")
    return sig


# Who sees what ----------------------------------------------------------------------------------

PAGES = ["dashboard", "task_list", "task_new", "notification_list", "notification_preferences"]


@pytest.mark.parametrize("name", PAGES)
def test_pages_redirect_anonymous_people_to_sign_in(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("name", PAGES)
def test_pages_answer_the_signed_in_person(owner, name):
    response = web(owner).get(reverse(name))
    assert response.status_code == 200
    assert b"Sign out" in response.content


def test_login_page_is_styled_like_the_rest_and_signs_in(client, owner):
    page = client.get("/accounts/login/")
    assert page.status_code == 200 and b"tasks_app/app.css" in page.content
    response = client.post("/accounts/login/", {"username": "owner", "password": "correct-horse-battery"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_task_pages_are_404_for_another_persons_task(owner, stranger, crm):
    client = web(stranger)
    for url in (reverse("task_detail", args=[crm.pk]), reverse("task_logs", args=[crm.pk]),
                reverse("task_logs_export", args=[crm.pk])):
        assert client.get(url).status_code == 404
    assert client.post(reverse("task_action", args=[crm.pk, "pause"])).status_code == 404
    crm.refresh_from_db()
    assert crm.status == Status.RUNNING


def test_the_list_shows_only_ones_own_tasks_and_staff_see_all(owner, stranger, operator):
    mine, theirs = submit(owner, name="mine-task"), submit(stranger, name="their-task")
    own_page = web(owner).get(reverse("task_list")).content.decode()
    assert "mine-task" in own_page and "their-task" not in own_page
    staff_page = web(operator).get(reverse("task_list")).content.decode()
    assert "mine-task" in staff_page and "their-task" in staff_page
    assert web(operator).get(reverse("task_detail", args=[theirs.pk])).status_code == 200
    assert mine.pk != theirs.pk


# The dashboard ----------------------------------------------------------------------------------


def test_dashboard_counts_running_work_and_failures(owner, stranger, crm):
    failed = submit(owner, name="broken-job")
    set_status(failed, Status.FAILED, finished_at=timezone.now(), error={"type": "RuntimeError", "message": "boom"})
    submit(stranger, name="not-mine")
    response = web(owner).get("/")
    assert response.context["counts"]["running"] == 1
    assert response.context["counts"]["failed"] == 1
    page = response.content.decode()
    assert "Cellphone Store CRM" in page and "RuntimeError: boom" in page and "not-mine" not in page
    assert "vendor/chart.js-4.6.1/chart.umd.min.js" in page


def test_dashboard_metrics_feed_the_charts(owner):
    done = submit(owner)
    started = timezone.now() - timezone.timedelta(seconds=3)
    set_status(done, Status.COMPLETED, started_at=started, finished_at=timezone.now())
    data = web(owner).get(reverse("dashboard_metrics") + "?range=7d").json()
    assert data["range"] == "7d"
    assert data["counts"]["completed"] == 1
    assert sum(p["completed"] for p in data["throughput"]["points"]) == 1
    [echo] = data["tasks"]
    assert echo["task"] == "examples.echo" and echo["failure_rate"] == 0 and echo["p50_ms"] >= 3000


def test_throughput_puts_each_end_in_its_hour_and_its_day(owner):
    now = timezone.now()
    done_at = (now - timezone.timedelta(hours=3)).replace(minute=30, second=0, microsecond=0)
    failed_at = (now - timezone.timedelta(hours=5)).replace(minute=5, second=0, microsecond=0)
    set_status(submit(owner), Status.COMPLETED, started_at=done_at, finished_at=done_at)
    set_status(submit(owner), Status.FAILED, started_at=failed_at, finished_at=failed_at)
    client = web(owner)
    for range_key, unit in (("24h", {"minute": 0}), ("7d", {"hour": 0, "minute": 0})):
        points = client.get(reverse("dashboard_metrics") + f"?range={range_key}").json()["throughput"]["points"]
        done = [p["at"] for p in points if p["completed"]]
        failed = [p["at"] for p in points if p["failed"]]
        assert done == [done_at.replace(**unit).isoformat()], range_key
        assert failed == [failed_at.replace(**unit).isoformat()], range_key


def test_dashboard_partials_answer_htmx(owner, crm):
    response = web(owner).get("/?partial=running", **HTMX)
    body = response.content.decode()
    assert 'id="dash-running"' in body and "<html" not in body and "Cellphone Store CRM" in body


def test_dashboard_counts_live_work_by_status_and_the_trash_apart(owner, stranger):
    now = timezone.now()
    set_status(submit(owner, name="running-one"), Status.RUNNING, started_at=now)
    set_status(submit(owner, name="trashed-running"), Status.RUNNING, started_at=now, marked_at=now,
               delete_after=now + timezone.timedelta(days=1))
    set_status(submit(owner, name="trashed-done"), Status.COMPLETED, finished_at=now, marked_at=now,
               delete_after=now + timezone.timedelta(days=1))
    submit(owner, {"kind": "chain", "steps": [{"task": "examples.noop"}] * 2, "name": "pipeline"})
    set_status(submit(stranger), Status.RUNNING, started_at=now)
    response = web(owner).get("/")
    counts = response.context["counts"]
    assert (counts["running"], counts["completed"], counts["pending"], counts["marked_for_deletion"]) == (1, 0, 1, 2)
    assert sum(counts.values()) == 4  # the chain counts once, not with its two members
    assert 'data-count-status="marked_for_deletion">2<' in response.content.decode()
    assert web(owner).get(reverse("dashboard_metrics")).json()["counts"] == counts


def test_running_now_shows_the_latest_starts_first_without_trash_or_members(owner):
    now = timezone.now()
    for minutes in range(22):
        set_status(submit(owner, name=f"job-{minutes:02d}"), Status.RUNNING,
                   started_at=now - timezone.timedelta(minutes=minutes))
    set_status(submit(owner, name="trashed"), Status.RUNNING, started_at=now, marked_at=now,
               delete_after=now + timezone.timedelta(days=1))
    chain = submit(owner, {"kind": "chain", "steps": [{"task": "examples.noop"}] * 2, "name": "pipeline"})
    set_status(chain.members.first(), Status.RUNNING, started_at=now)
    running = web(owner).get("/").context["running"]
    assert [s.name for s in running] == [f"job-{minutes:02d}" for minutes in range(20)]


# The pages at scale: the same queries whatever the number of rows, through the page indexes ----

SCALE_TASKS = ("examples.noop", "examples.log", "examples.fail")
SCALE_STATES = (Status.COMPLETED, Status.FAILED, Status.RUNNING, Status.PENDING, Status.QUEUED, Status.PAUSED)


def add_rows(owner, n: int) -> None:
    """n top-level tasks in every state and task name, finished ones in the last hour; every 5th a
    container with two members, every 7th in the trash."""
    now = timezone.now()
    for i in range(n):
        state, name = SCALE_STATES[i % len(SCALE_STATES)], SCALE_TASKS[i // len(SCALE_STATES) % len(SCALE_TASKS)]
        started = now - timezone.timedelta(minutes=10) if state not in (Status.PENDING, Status.QUEUED) else None
        finished = now - timezone.timedelta(minutes=1) if state in (Status.COMPLETED, Status.FAILED) else None
        trash = {"marked_at": now, "delete_after": now + timezone.timedelta(days=1)} if i % 7 == 6 else {}
        task = {"task": name}
        spec = {"kind": "swarm", "tasks": [task, task], "name": f"swarm {i}"} if i % 5 == 4 else task
        sig = execution.submit(spec, owner=owner, run=False)
        Signature.objects.filter(pk=sig.pk).update(status=state, started_at=started, finished_at=finished, **trash)
        Signature.objects.filter(parent=sig).update(status=state, started_at=started, finished_at=finished)


def queries_of(client: Client, url: str) -> list[str]:
    client.get(url)  # the first request of a client may fill caches
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return [q["sql"] for q in captured.captured_queries]


SCALE_PAGES = ["/", "/dashboard/metrics.json", "/tasks/", "/tasks/?status=running",
               "/tasks/?status=marked_for_deletion", "/tasks/?page=2"]


def test_the_pages_make_the_same_queries_whatever_the_number_of_rows(owner):
    client = web(owner)
    add_rows(owner, 18)
    few = {url: len(queries_of(client, url)) for url in SCALE_PAGES}
    add_rows(owner, 90)
    many = {url: len(queries_of(client, url)) for url in SCALE_PAGES}
    assert many == few
    assert few["/"] <= 6  # session, user, counts (one grouped query), bell, running, failures


def test_the_list_and_the_dashboard_read_the_page_indexes(owner):
    """The partial indexes serve only queries whose filters imply their condition (top level); a
    changed filter would silently read every row of the person again. SQLite's planner chooses by
    these rules alone; PostgreSQL's by statistics, which a dozen rows do not give (its plans were
    checked with EXPLAIN ANALYZE on bench/pages.py's 100,000 rows)."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL chooses its plan from statistics: a dozen rows are read faster without an index")
    add_rows(owner, 12)
    mine = Signature.objects.visible_to(owner)
    plans = {
        "sig_top_owner_created_idx": task_list.ordered(task_list.filtered(mine, {}), task_list.DEFAULT_SORT)[:25],
        "sig_top_owner_status_idx": task_list.filtered(mine, {"status": Status.RUNNING})[:25],
        "COVERING INDEX sig_top_owner_status_idx": metrics.running(mine),
        "sig_owner_status_finished_idx": metrics.recent_failures(mine),
    }
    for index, qs in plans.items():
        assert index in qs.explain(), index


# The list: filters, sorting, pages, bulk actions ------------------------------------------------


def test_filters_live_in_the_url(owner):
    submit(owner, name="alpha", category="billing", tags=["nightly"])
    submit(owner, name="beta", category="reports")
    gamma = submit(owner, {"task": "examples.sleep", "kwargs": {"seconds": 1}, "name": "gamma"})
    deletion.delete(gamma)
    client = web(owner)

    def names(query: str) -> set[str]:
        return {s.name for s in client.get(reverse("task_list") + query).context["page"]}

    assert names("") == {"alpha", "beta"}
    assert names("?category=billing") == {"alpha"}
    assert names("?tag=nightly") == {"alpha"}
    assert names("?q=bet") == {"beta"}
    assert names("?status=marked_for_deletion") == {"gamma"}
    assert names("?task=examples.echo&status=pending") == {"alpha", "beta"}
    today = timezone.localdate().isoformat()
    assert names(f"?created_after={today}&created_before={today}") == {"alpha", "beta"}
    assert names("?created_before=2000-01-01") == set()
    assert names("?created_after=0001-01-01&created_before=9999-12-31") == {"alpha", "beta"}


def test_columns_sort_both_ways_and_pages_keep_the_filters(owner):
    for i in range(30):
        submit(owner, name=f"job-{i:02d}", category="batch")
    client = web(owner)
    ascending = client.get(reverse("task_list") + "?category=batch&sort=name")
    assert [s.name for s in ascending.context["page"]][:2] == ["job-00", "job-01"]
    assert 'href="?category=batch&amp;sort=name&amp;page=2"' in ascending.content.decode()
    descending = client.get(reverse("task_list") + "?category=batch&sort=-name&page=2")
    assert [s.name for s in descending.context["page"]] == ["job-04", "job-03", "job-02", "job-01", "job-00"]


def test_filtering_over_htmx_returns_only_the_results(owner):
    submit(owner, name="alpha")
    response = web(owner).get(reverse("task_list") + "?q=alpha", **HTMX)
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="results"') and "alpha" in body


def test_bulk_actions_report_successes_and_refusals(owner):
    pending, other = submit(owner, name="one"), submit(owner, name="two")
    done = set_status(submit(owner, name="three"), Status.COMPLETED, finished_at=timezone.now())
    response = web(owner).post(
        reverse("task_bulk"), {"action": "pause", "ids": [pending.pk, other.pk, done.pk], "next": "/tasks/?q=t"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == "/tasks/?q=t"
    texts = messages_of(response)
    assert f"2 tasks paused: #{pending.pk}, #{other.pk}." in texts
    assert any(t.startswith(f"Refused — #{done.pk} three: cannot pause a completed signature") for t in texts)
    assert Signature.objects.get(pk=pending.pk).status == Status.PAUSED
    assert "Traceback" not in response.content.decode()


def test_bulk_delete_and_restore(owner):
    sig = submit(owner, name="one")
    client = web(owner)
    client.post(reverse("task_bulk"), {"action": "delete", "ids": [sig.pk]})
    sig.refresh_from_db()
    assert sig.delete_after is not None
    client.post(reverse("task_bulk"), {"action": "restore", "ids": [sig.pk]})
    sig.refresh_from_db()
    assert sig.delete_after is None


def test_bulk_cancel_needs_the_confirmation(owner, stranger):
    mine, theirs = submit(owner), submit(stranger)
    client = web(owner)
    response = client.post(reverse("task_bulk"), {"action": "cancel", "ids": [mine.pk]}, follow=True)
    assert any("confirm it in the dialog" in t for t in messages_of(response))
    assert Signature.objects.filter(pk=mine.pk).exists()
    response = client.post(reverse("task_bulk"), {"action": "cancel", "confirm": "yes", "ids": [mine.pk, theirs.pk]},
                           follow=True)
    assert f"1 task cancelled: #{mine.pk}." in messages_of(response)
    assert not Signature.objects.filter(pk=mine.pk).exists()
    assert Signature.objects.filter(pk=theirs.pk).exists()


def test_bulk_without_selection_or_action_says_so(owner):
    client = web(owner)
    nothing_selected = client.post(reverse("task_bulk"), {"action": "pause"}, follow=True)
    assert "Select at least one task." in messages_of(nothing_selected)
    assert "Choose an action." in messages_of(client.post(reverse("task_bulk"), {}, follow=True))


def test_bulk_next_never_leaves_the_site(owner):
    response = web(owner).post(reverse("task_bulk"), {"action": "pause", "next": "https://evil.example/"})
    assert response["Location"] == "/tasks/"


# The detail page ----------------------------------------------------------------------------------


def test_detail_draws_the_progress_view(owner, crm):
    LogEntry.objects.create(signature=crm, message="Cellphone Store CRM: Generate application UI")
    page = web(owner).get(reverse("task_detail", args=[crm.pk])).content.decode()
    assert "Cellphone Store CRM" in page
    assert 'aria-valuenow="37"' in page and "37%" in page
    assert "Step 2 of 4: Generate application UI" in page
    assert "Customer list view <span class=\"sym\" aria-hidden=\"true\">✓</span>" in page
    assert "Sales form <span class=\"sym\" aria-hidden=\"true\">◐</span>" in page and "(in progress)" in page
    assert "Repair board <span class=\"sym\" aria-hidden=\"true\">○</span>" in page and "(pending)" in page
    assert "Started: <time" in page and "2 min ago" in page
    assert f'data-ws-task="/ws/tasks/{crm.pk}/"' in page
    assert "Cellphone Store CRM: Generate application UI" in page


def test_detail_offers_the_controls_the_status_allows(owner, crm):
    page = web(owner).get(reverse("task_detail", args=[crm.pk])).content.decode()
    for action in ("pause", "interrupt", "delete", "cancel"):
        assert f'id="action-{action}"' in page
    for action in ("resume", "retry", "rerun", "restore", "approve"):
        assert f'id="action-{action}"' not in page
    error = {"type": "RuntimeError", "message": "boom", "traceback": "Traceback (most recent call last)"}
    failed = set_status(submit(owner), Status.FAILED, finished_at=timezone.now(), error=error)
    page = web(owner).get(reverse("task_detail", args=[failed.pk])).content.decode()
    assert 'id="action-retry"' in page and 'id="action-rerun"' in page and 'id="action-pause"' not in page
    assert "RuntimeError: boom" in page


def test_pause_from_the_detail_page(owner):
    sig = submit(owner)
    response = web(owner).post(reverse("task_action", args=[sig.pk, "pause"]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("task_detail", args=[sig.pk])
    assert f"#{sig.pk} examples.echo: paused." in messages_of(response)
    sig.refresh_from_db()
    assert sig.status == Status.PAUSED


def test_a_refused_action_is_a_message_not_an_error_page(owner):
    sig = set_status(submit(owner), Status.COMPLETED, finished_at=timezone.now())
    response = web(owner).post(reverse("task_action", args=[sig.pk, "pause"]), follow=True)
    assert response.status_code == 200
    [text] = messages_of(response)
    assert text.startswith(f"Refused — #{sig.pk} examples.echo: cannot pause a completed signature")


def test_htmx_actions_answer_with_the_header_partial_and_the_messages(owner):
    sig = submit(owner)
    response = web(owner).post(reverse("task_action", args=[sig.pk, "pause"]), **HTMX)
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="task-header"')
    assert 'id="messages"' in body and 'hx-swap-oob="true"' in body and "paused." in body
    assert response["HX-Trigger"] == '{"task-changed": {}}' or "task-changed" in response["HX-Trigger"]
    refused = web(owner).post(reverse("task_action", args=[sig.pk, "retry"]), **HTMX)
    assert "Refused" in refused.content.decode()


def test_cancel_requires_the_confirmation(owner):
    sig = submit(owner)
    client = web(owner)
    response = client.post(reverse("task_action", args=[sig.pk, "cancel"]), follow=True)
    assert any("confirm it in the dialog" in t for t in messages_of(response))
    assert Signature.objects.filter(pk=sig.pk).exists()
    response = client.post(reverse("task_action", args=[sig.pk, "cancel"]), {"confirm": "yes"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("task_list")
    assert not Signature.objects.filter(pk=sig.pk).exists()
    assert client.get(reverse("task_detail", args=[sig.pk])).status_code == 404


def test_htmx_cancel_redirects_the_browser_to_the_list(owner):
    sig = submit(owner)
    response = web(owner).post(reverse("task_action", args=[sig.pk, "cancel"]), {"confirm": "yes"}, **HTMX)
    assert response["HX-Redirect"] == reverse("task_list")


def test_delete_with_a_restore_window_then_restore(owner):
    sig = submit(owner)
    client = web(owner)
    client.post(reverse("task_action", args=[sig.pk, "delete"]), {"ttl": "3600"})
    sig.refresh_from_db()
    assert 3590 < (sig.delete_after - sig.marked_at).total_seconds() <= 3600
    page = client.get(reverse("task_detail", args=[sig.pk])).content.decode()
    assert "In the trash" in page and 'id="action-restore"' in page
    client.post(reverse("task_action", args=[sig.pk, "restore"]))
    sig.refresh_from_db()
    assert sig.delete_after is None


def test_priority_is_changeable(owner):
    sig = submit(owner)
    web(owner).post(reverse("task_action", args=[sig.pk, "priority"]), {"priority": "high"})
    sig.refresh_from_db()
    assert sig.priority == "high"
    response = web(owner).post(reverse("task_action", args=[sig.pk, "priority"]), {"priority": "urgent"}, follow=True)
    assert any("choose high, medium or low" in t for t in messages_of(response))


def test_unknown_action_is_404(owner):
    sig = submit(owner)
    assert web(owner).post(reverse("task_action", args=[sig.pk, "explode"])).status_code == 404
    assert web(owner).get(reverse("task_action", args=[sig.pk, "pause"])).status_code == 405


def test_approve_with_a_comment(owner, django_capture_on_commit_callbacks):
    sig = set_status(submit(owner, {"task": "examples.build_crm", "kwargs": {"approval": True}}),
                     Status.WAITING_APPROVAL, attempts=1)
    Approval.objects.create(signature=sig, title="Configure workflows of Cellphone Store CRM?", details="approve?")
    client = web(owner)
    page = client.get(reverse("task_detail", args=[sig.pk])).content.decode()
    assert "Approval needed: Configure workflows of Cellphone Store CRM?" in page
    assert 'id="action-approve"' in page and 'id="action-reject"' in page
    response = client.post(reverse("task_action", args=[sig.pk, "approve"]), {"comment": "go ahead"}, follow=True)
    assert f"#{sig.pk} examples.build_crm: approved." in messages_of(response)
    approval = sig.approvals.get()
    assert approval.status == "approved" and approval.comment == "go ahead" and approval.decided_by == "owner"
    again = client.post(reverse("task_action", args=[sig.pk, "reject"]), follow=True)
    assert any("no approval is pending" in t for t in messages_of(again))


def test_detail_partials_answer_htmx(owner, crm):
    client = web(owner)
    for partial, marker in (("header", 'id="task-header"'), ("progress", 'id="task-progress"'),
                            ("info", 'id="task-info"')):
        body = client.get(reverse("task_detail", args=[crm.pk]) + f"?partial={partial}", **HTMX).content.decode()
        assert body.lstrip().startswith(f"<section {marker}") and "<html" not in body


def test_a_swarm_lists_its_members_page_by_page(owner):
    swarm = submit(owner, {"kind": "swarm", "name": "big swarm",
                           "tasks": [{"task": "examples.echo", "kwargs": {"value": i}} for i in range(60)]})
    client = web(owner)
    page = client.get(reverse("task_detail", args=[swarm.pk]))
    assert len(page.context["members"]) == 50 and "Page 1 of 2" in page.content.decode()
    assert "0 of 60 members done" in page.content.decode()
    second = client.get(reverse("task_detail", args=[swarm.pk]) + "?partial=members&page=2", **HTMX)
    assert len(second.context["members"]) == 10 and 'id="task-members"' in second.content.decode()


def test_a_swarm_longer_than_its_listed_steps_counts_every_member_done(owner, monkeypatch):
    monkeypatch.setattr(progress, "MAX_MEMBER_STEPS", 3)
    swarm = submit(owner, {"kind": "swarm", "tasks": [{"task": "examples.noop"} for _ in range(6)]})
    swarm.members.exclude(position=4).update(status=Status.COMPLETED)
    page = web(owner).get(reverse("task_detail", args=[swarm.pk])).content.decode()
    assert "5 of 6 members done" in page


def test_callbacks_and_parent_links(owner):
    chain = submit(owner, {"kind": "chain", "steps": [{"task": "examples.noop"}, {"task": "examples.noop"}],
                           "on_success": [{"task": "examples.echo", "name": "tell-me"}]})
    page = web(owner).get(reverse("task_detail", args=[chain.pk])).content.decode()
    assert "tell-me" in page and "on success" in page
    member = chain.members.first()
    assert f"#{chain.pk}" in web(owner).get(reverse("task_detail", args=[member.pk])).content.decode()


# Logs -------------------------------------------------------------------------------------------


@pytest.fixture
def logged(owner) -> Signature:
    chain = submit(owner, {"kind": "chain", "steps": [{"task": "examples.log"}, {"task": "examples.log"}]})
    first, second = chain.members.order_by("position")
    LogEntry.objects.create(signature=first, level=20, message="loading customers")
    LogEntry.objects.create(signature=first, level=40, message="customer import failed")
    LogEntry.objects.create(signature=second, level=30, message="slow product query")
    return chain


def test_logs_page_filters_by_level_and_text(owner, logged):
    client = web(owner)
    url = reverse("task_logs", args=[logged.pk])
    assert [e.message for e in client.get(url).context["page"]] == [
        "loading customers", "customer import failed", "slow product query"]
    assert [e.message for e in client.get(url + "?level=WARNING").context["page"]] == [
        "customer import failed", "slow product query"]
    assert [e.message for e in client.get(url + "?q=customer+failed").context["page"]] == ["customer import failed"]
    partial = client.get(url + "?q=slow", **HTMX).content.decode()
    assert partial.lstrip().startswith('<section id="log-entries"') and "slow product query" in partial


def test_logs_of_a_member_or_its_whole_workflow(owner, logged):
    first = logged.members.order_by("position").first()
    client = web(owner)
    own = client.get(reverse("task_logs", args=[first.pk])).context["page"]
    assert len(own) == 2
    workflow = client.get(reverse("task_logs", args=[first.pk]) + "?scope=workflow").context["page"]
    assert len(workflow) == 3


@pytest.mark.parametrize(("fmt", "content_type", "marker"), [
    ("json", "application/json", '"message": "customer import failed"'),
    ("csv", "text/csv", "id,task_id,at,level,logger,message"),
    ("text", "text/plain", "ERROR    ["),
])
def test_logs_export(owner, logged, fmt, content_type, marker):
    response = web(owner).get(reverse("task_logs_export", args=[logged.pk]) + f"?format={fmt}&level=ERROR")
    assert response["Content-Type"].startswith(content_type)
    assert f'filename="task-{logged.pk}-logs.' in response["Content-Disposition"]
    body = response.getvalue().decode()
    assert marker in body and "loading customers" not in body
    if fmt == "json":
        assert [e["message"] for e in json.loads(body)] == ["customer import failed"]


# Executing a task -------------------------------------------------------------------------------


def test_the_form_is_built_from_the_tasks_parameters(owner):
    client = web(owner)
    page = client.get(reverse("task_new") + "?task=examples.build_crm").content.decode()
    for name in ("kw_title", "kw_seconds_per_item", "kw_approval"):
        assert f'name="{name}"' in page
    assert 'value="Cellphone Store CRM"' in page
    partial = client.get(reverse("task_new") + "?partial=params&task=examples.sleep", **HTMX).content.decode()
    assert partial.lstrip().startswith('<fieldset id="params"') and 'name="kw_seconds"' in partial


def test_submitting_a_task_redirects_to_its_live_page(owner):
    response = web(owner).post(reverse("task_new"), {
        "mode": "task", "task": "examples.sleep", "kw_seconds": "2.5", "kw_step": "", "extra": "",
        "name": "nap", "priority": "high", "category": "demo", "tags": "a, b",
    })
    sig = Signature.objects.get(owner=owner)
    assert response.status_code == 302 and response["Location"] == reverse("task_detail", args=[sig.pk])
    assert sig.task_name == "examples.sleep" and sig.kwargs == {"seconds": 2.5}
    assert (sig.name, sig.priority, sig.category, sig.tags) == ("nap", "high", "demo", ["a", "b"])
    assert sig.status == Status.QUEUED


def test_spec_errors_show_next_to_the_fields(owner):
    client = web(owner)
    missing = client.post(reverse("task_new"), {"mode": "task", "task": "examples.sleep", "kw_seconds": ""})
    assert missing.status_code == 400
    assert "This field is required." in missing.context["params"].errors["kw_seconds"]
    unknown = client.post(reverse("task_new"), {"mode": "task", "task": "examples.echo", "extra": '{"nope": 1}'})
    assert unknown.status_code == 400
    assert "kwargs.nope: unknown argument of examples.echo" in unknown.context["params"].errors["extra"]
    assert not Signature.objects.exists()


def test_a_json_spec_submits_a_chain(owner):
    spec = {"kind": "chain", "steps": [{"task": "examples.add", "kwargs": {"a": 1}}, {"task": "examples.double"}]}
    response = web(owner).post(reverse("task_new"), {"mode": "spec", "spec": json.dumps(spec), "name": "math"})
    sig = Signature.objects.get(owner=owner, parent=None)
    assert response["Location"] == reverse("task_detail", args=[sig.pk])
    assert sig.kind == "chain" and sig.name == "math" and sig.members.count() == 2


def test_json_spec_errors_are_shown(owner):
    client = web(owner)
    broken = client.post(reverse("task_new"), {"mode": "spec", "spec": "{not json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.content.decode()
    bad = client.post(reverse("task_new"), {"mode": "spec", "spec": json.dumps({"kind": "chain", "steps": [
        {"task": "examples.nope"}, {"task": "examples.noop"}]})})
    assert bad.status_code == 400
    assert "steps[0].task: unknown task &#x27;examples.nope&#x27;" in bad.content.decode()
    priority = client.post(reverse("task_new"), {"mode": "spec", "spec": '{"task": "examples.noop"}', "priority": "x"})
    assert "Select a valid choice" in priority.content.decode()


# Notifications ----------------------------------------------------------------------------------


def test_the_bell_counts_unread_notifications(owner, stranger):
    Notification.objects.create(owner=owner, event="task_failed", title="❌ Task failed at Step 2")
    Notification.objects.create(owner=owner, event="task_completed", title="done", read_at=timezone.now())
    Notification.objects.create(owner=stranger, event="task_failed", title="not yours")
    client = web(owner)
    page = client.get("/").content.decode()
    assert 'aria-label="Notifications: 1 unread"' in page
    bell = client.get(reverse("notification_bell"), **HTMX).content.decode()
    assert bell.lstrip().startswith('<a id="bell"') and 'data-count="1"' in bell


def test_notifications_page_lists_and_marks_read(owner, stranger):
    mine = Notification.objects.create(owner=owner, event="task_completed", title="✅ Your CRM is ready!")
    other = Notification.objects.create(owner=owner, event="task_started", title="Your CRM task has started")
    theirs = Notification.objects.create(owner=stranger, event="task_failed", title="not yours")
    client = web(owner)
    page = client.get(reverse("notification_list")).content.decode()
    assert "Your CRM is ready!" in page and "not yours" not in page
    client.post(reverse("notification_read"), {"ids": [mine.pk, theirs.pk]})
    mine.refresh_from_db(), other.refresh_from_db(), theirs.refresh_from_db()
    assert mine.read_at and not other.read_at and not theirs.read_at
    response = client.post(reverse("notification_read"), {"all": "yes"}, follow=True)
    assert "1 notification marked read." in messages_of(response)
    assert [n.title for n in client.get(reverse("notification_list") + "?unread=1").context["page"]] == []


def test_notification_preferences_are_saved(owner):
    client = web(owner)
    response = client.post(reverse("notification_preferences"), {
        "events": ["task_failed", "approval_needed"], "in_app": "on", "email": "on",
        "email_long_task_seconds": "900", "webhook_url": "https://hooks.example.com/x",
    })
    assert response.status_code == 302
    preference = NotificationPreference.objects.get(user=owner)
    assert preference.events == ["task_failed", "approval_needed"]
    assert preference.email and not preference.browser and preference.webhook_url == "https://hooks.example.com/x"
    invalid = client.post(reverse("notification_preferences"), {"webhook_url": "not a url",
                                                                 "email_long_task_seconds": "1"})
    assert invalid.status_code == 400 and "Enter a valid URL." in invalid.content.decode()


# Every page ------------------------------------------------------------------------------------


def test_every_page_has_the_chat_panel_and_csrf_for_htmx(owner):
    page = web(owner).get("/").content.decode()
    assert 'data-chat-url="/api/chat/"' in page
    assert 'hx-headers=\'{"X-CSRFToken": "' in page
    assert "vendor/htmx.org-2.0.11/htmx.min.js" in page


def test_rerun_after_the_deletion_window_is_refused_politely(owner):
    sig = set_status(submit(owner), Status.COMPLETED, finished_at=timezone.now())
    deletion.delete(sig, ttl=0)
    response = web(owner).post(reverse("task_action", args=[sig.pk, "rerun"]), follow=True)
    assert any("deletion window has passed" in t for t in messages_of(response))


def test_interrupt_a_pending_task(owner):
    sig = submit(owner)
    web(owner).post(reverse("task_action", args=[sig.pk, "interrupt"]))
    sig.refresh_from_db()
    assert sig.status == Status.INTERRUPTED
    assert lifecycle.RESUMABLE  # the resume control is offered next
    assert 'id="action-resume"' in web(owner).get(reverse("task_detail", args=[sig.pk])).content.decode()
