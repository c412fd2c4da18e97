"""The Schedules page, its HTMX actions, the task page's link back, and the admin's schedules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client

from tasks_app.models import Schedule, Signature
from tasks_app.services import schedules

pytestmark = pytest.mark.django_db

ECHO = {"task": "examples.echo", "kwargs": {"value": 1}}
FORM = {"name": "nightly", "spec": '{"task": "examples.echo", "kwargs": {"value": 1}}', "cron": "30 2 * * *",
        "timezone": "Europe/Paris", "interval": "", "start_at": "2026-06-01T00:00", "end_at": "", "max_active": "2",
        "catch_up": "once"}


@pytest.fixture
def clock():
    with time_machine.travel(datetime(2026, 5, 1, 10, tzinfo=UTC), tick=False) as traveller:
        yield traveller


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_form_creates_a_schedule_with_start_in_its_own_zone(owner, clock):
    client = signed_in(owner)
    response = client.post("/schedules/", FORM)
    assert response.status_code == 302
    schedule = Schedule.objects.get()
    assert (schedule.owner, schedule.cron, schedule.max_active, schedule.catch_up) == (owner, "30 2 * * *", 2, "once")
    assert schedule.start_at == datetime(2026, 5, 31, 22, tzinfo=UTC)  # midnight in Paris, summer time
    assert schedule.next_run_at == datetime(2026, 6, 1, 0, 30, tzinfo=UTC)

    page = client.get("/schedules/").content.decode()
    assert "nightly" in page and 'datetime="2026-06-01T00:30:00+00:00"' in page and "no run yet" in page


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"cron": "every day"}, "cron", "cron expression"),
    ({"timezone": "Paris"}, "timezone", "unknown time zone"),
    ({"spec": '{"task": "examples.nope"}'}, "spec", "spec.task"),
    ({"spec": "{not json"}, "spec", "valid JSON"),
])
def test_bad_input_is_shown_on_its_field(owner, change, field, message):
    response = signed_in(owner).post("/schedules/", {**FORM, **change})
    assert response.status_code == 400
    assert message in " ".join(response.context["form"].errors[field])
    assert not Schedule.objects.exists()


def test_htmx_actions_answer_the_rows_and_run_now_links_the_run(owner, clock):
    schedule = schedules.create({"name": "often", "spec": ECHO, "interval": 60}, owner=owner)
    client = signed_in(owner)
    paused = client.post(f"/schedules/{schedule.pk}/pause/", headers={"HX-Request": "true"})
    assert paused.status_code == 200
    assert "Resume</button>" in paused.content.decode() and "<html" not in paused.content.decode()
    assert Schedule.objects.get().paused

    client.post(f"/schedules/{schedule.pk}/run/", headers={"HX-Request": "true"})
    run = Signature.objects.get(schedule=schedule)
    rows = client.get("/schedules/", headers={"HX-Request": "true"}).content.decode()
    assert f'href="/tasks/{run.pk}/"' in rows and f'data-status-task="{run.pk}"' in rows

    detail = client.get(f"/tasks/{run.pk}/").content.decode()
    assert f'href="/schedules/#schedule-{schedule.pk}">often</a>' in detail

    client.post(f"/schedules/{schedule.pk}/delete/")
    assert not Schedule.objects.exists()
    assert Signature.objects.get(pk=run.pk).schedule is None


def test_the_edit_page_saves_through_the_service(owner, clock):
    schedule = schedules.create({"name": "often", "spec": ECHO, "interval": 60}, owner=owner)
    client = signed_in(owner)
    assert 'value="often"' in client.get(f"/schedules/{schedule.pk}/edit/").content.decode()
    response = client.post(f"/schedules/{schedule.pk}/edit/", {**FORM, "name": "renamed", "start_at": ""})
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert (schedule.name, schedule.cron, schedule.interval) == ("renamed", "30 2 * * *", None)
    assert schedule.next_run_at == datetime(2026, 5, 2, 0, 30, tzinfo=UTC)


def test_another_users_schedule_is_not_shown_nor_changed(owner, colleague):
    schedule = schedules.create({"name": "mine", "spec": ECHO, "interval": 60}, owner=owner)
    client = signed_in(colleague)
    assert "mine" not in client.get("/schedules/").content.decode()
    assert client.post(f"/schedules/{schedule.pk}/pause/").status_code == 404
    assert client.get(f"/schedules/{schedule.pk}/edit/").status_code == 404
    assert not Schedule.objects.get().paused


def test_the_nav_links_the_page(owner):
    assert 'href="/schedules/"' in signed_in(owner).get("/").content.decode()


def test_the_admin_creates_schedules_through_the_service_and_names_bad_fields(owner, clock, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client = signed_in(root)
    data = {"owner": owner.pk, "name": "from admin", "spec": '{"task": "examples.echo"}', "cron": "",
            "timezone": "UTC", "interval": "120", "catch_up": "skip"}
    bad = client.post("/admin/tasks_app/schedule/add/", {**data, "interval": "", "cron": "99 * * * *"})
    assert bad.status_code == 200 and "cron expression" in bad.content.decode()

    assert client.post("/admin/tasks_app/schedule/add/", data).status_code == 302
    schedule = Schedule.objects.get()
    assert schedule.next_run_at == datetime(2026, 5, 1, 10, 2, tzinfo=UTC)

    client.post("/admin/tasks_app/schedule/", {"action": "run_selected", "_selected_action": [schedule.pk]})
    assert Signature.objects.get().schedule == schedule
