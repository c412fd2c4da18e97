"""/api/schedules/: create, list, edit, pause, resume, run now, runs, delete; 400s naming the field;
a user's schedules are their own (staff holding the task permissions see and change everyone's)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine

from tasks_app.models import Schedule, Signature

pytestmark = pytest.mark.django_db

ECHO = {"task": "examples.echo", "kwargs": {"value": 1}}
DAILY = {"name": "daily report", "spec": ECHO, "cron": "0 9 * * *", "timezone": "Europe/Paris"}


@pytest.fixture
def clock():
    with time_machine.travel(datetime(2026, 5, 1, 10, tzinfo=UTC), tick=False) as traveller:
        yield traveller


def create(client, **fields):
    response = client.post("/api/schedules/", {**DAILY, **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_cron_schedule_is_created_with_its_next_run(owner_client, clock):
    body = create(owner_client)
    assert body["next_run_at"] == "2026-05-02T07:00:00Z"  # 09:00 in Paris (summer time)
    assert (body["owner"], body["paused"], body["last_run_at"], body["catch_up"]) == ("owner", False, None, "skip")
    assert owner_client.get("/api/schedules/").json()["results"][0]["id"] == body["id"]


@pytest.mark.parametrize(("fields", "field"), [
    ({"cron": "not a cron"}, "cron"),
    ({"timezone": "Europe/Atlantis"}, "timezone"),
    ({"cron": "", "interval": 0}, "interval"),
    ({"cron": "", "interval": "١٢"}, "interval"),
    ({"interval": 60}, "cron"),  # both
    ({"spec": {"task": "examples.nope"}}, "spec.task"),
    ({"spec": "examples.echo"}, "spec"),
    ({"max_active": -1}, "max_active"),
    ({"catch_up": "always"}, "catch_up"),
    ({"start_at": "yesterday"}, "start_at"),
    ({"start_at": "2026-06-02T00:00:00Z", "end_at": "2026-06-01T00:00:00Z"}, "end_at"),
    ({"next_run_at": "2026-06-02T00:00:00Z", "colour": "red"}, "colour"),
])
def test_bad_input_is_a_400_naming_the_field(owner_client, fields, field):
    response = owner_client.post("/api/schedules/", {**DAILY, **fields}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not Schedule.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(owner_client):
    response = owner_client.post("/api/schedules/", [1, 2], format="json")
    assert response.status_code == 400
    assert "body" in response.json()["errors"]


def test_edit_pause_resume_run_now_and_runs(owner_client, owner, clock):
    schedule = create(owner_client)
    url = f"/api/schedules/{schedule['id']}/"

    edited = owner_client.patch(url, {"cron": "", "interval": 300}, format="json").json()
    assert (edited["cron"], edited["interval"], edited["next_run_at"]) == ("", 300, "2026-05-01T10:05:00Z")
    assert owner_client.patch(url, {"interval": -5}, format="json").json()["errors"].keys() == {"interval"}

    paused = owner_client.post(url + "pause").json()
    assert (paused["paused"], paused["next_run_at"]) == (True, None)
    resumed = owner_client.post(url + "resume").json()
    assert (resumed["paused"], resumed["next_run_at"]) == (False, "2026-05-01T10:05:00Z")

    run = owner_client.post(url + "run")
    assert run.status_code == 201
    assert (run.json()["schedule"], run.json()["scheduled_for"], run.json()["task"]) == (
        schedule["id"], None, "examples.echo")
    assert owner_client.get(f"/api/tasks/{run.json()['id']}/").json()["schedule"] == schedule["id"]
    runs = owner_client.get(url + "runs").json()
    assert [r["id"] for r in runs["results"]] == [run.json()["id"]]
    assert owner_client.get(url).json()["active_runs"] == 1

    assert owner_client.delete(url).status_code == 204
    assert owner_client.get(url).status_code == 404
    assert Signature.objects.get(pk=run.json()["id"]).schedule is None  # the run stays


def test_another_users_schedule_is_hidden_and_untouched(owner_client, colleague_client, staff_client):
    schedule = create(owner_client)
    url = f"/api/schedules/{schedule['id']}/"
    for client in (colleague_client, staff_client):  # staff without the task permissions see only their own
        assert client.get("/api/schedules/").json()["results"] == []
        assert client.get(url).status_code == 404
        assert client.post(url + "pause").status_code == 404
        assert client.post(url + "run").status_code == 404
        assert client.get(url + "runs").status_code == 404
        assert client.delete(url).status_code == 404
    assert owner_client.get(url).json()["paused"] is False
    assert not Signature.objects.exists()


def test_staff_holding_the_task_permissions_see_and_change_everyones(owner_client, operator_client):
    schedule = create(owner_client)
    assert [s["id"] for s in operator_client.get("/api/schedules/").json()["results"]] == [schedule["id"]]
    assert operator_client.post(f"/api/schedules/{schedule['id']}/pause").json()["paused"] is True
    run = operator_client.post(f"/api/schedules/{schedule['id']}/run").json()
    assert run["owner"] == "owner"  # the schedule's owner runs it, whoever asked
