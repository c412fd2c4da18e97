"""Hostile input: digits other than 0-9 in query parameters, what the API refuses typed into the web
forms, formulas in CSV exports, and a spec whose kind is not a string."""

from __future__ import annotations

import csv
import io

import pytest
from django.test import Client
from django.urls import reverse

from tasks_app.forms import DepthSafeJSONField
from tasks_app.models import LogEntry, Notification, Signature, Status
from tests.api_helpers import ECHO, make, set_status, url

pytestmark = pytest.mark.django_db

ARABIC_12 = "١٢"  # int() reads it as 12
SUPERSCRIPT_2 = "²"  # str.isdigit() is true, int() raises


def web(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


# Digits ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("digits", [ARABIC_12, SUPERSCRIPT_2, "٣", "１２"])
@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/tasks/", "page"),
        ("/api/tasks/", "page_size"),
        ("/api/tasks/", "parent"),
        ("/api/tasks/{id}/logs", "limit"),
        ("/api/tasks/{id}/logs", "after"),
        ("/api/tasks/{id}/events", "limit"),
        ("/api/notifications/", "page"),
    ],
)
def test_api_query_numbers_in_other_digits_are_a_400_naming_the_parameter(owner, owner_client, path, param, digits):
    sig = make(owner, ECHO)

    response = owner_client.get(path.format(id=sig.pk), {param: digits})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and param in response.json()["errors"]
    assert "0-9" in response.json()["errors"][param]


def test_a_delete_ttl_in_other_digits_is_a_400_and_deletes_nothing(owner, owner_client):
    sig = make(owner, ECHO)

    response = owner_client.delete(url(sig) + f"?ttl={ARABIC_12}")

    assert response.status_code == 400 and "ttl" in response.json()["errors"]
    sig.refresh_from_db()
    assert sig.delete_after is None


def test_ascii_numbers_still_work(owner, owner_client):
    sig = make(owner, ECHO)

    assert owner_client.get("/api/tasks/", {"page": "1", "page_size": "5"}).status_code == 200
    assert owner_client.get(url(sig, "logs"), {"limit": "3", "after": "0"}).status_code == 200
    assert owner_client.delete(url(sig) + "?ttl=60").status_code == 200


@pytest.mark.parametrize("digits", [SUPERSCRIPT_2, ARABIC_12, "9" * 30])
def test_pages_take_odd_digits_without_a_server_error(owner, digits):
    chain = make(owner, {"kind": "chain", "steps": [ECHO, ECHO]})
    client = web(owner)

    for path in (
        f"/tasks/?q={digits}",
        f"/tasks/{chain.pk}/graph.json?page={digits}",
        f"/tasks/{chain.pk}/graph.json?expand={digits}&collapse={digits}",
        f"/tasks/{chain.pk}/graph/table/?page={digits}",
        f"/tasks/{chain.pk}/timeline.json?page={digits}",
        f"/graphs/new/?from_task={digits}",
    ):
        assert client.get(path).status_code in (200, 404), path
    assert client.post(reverse("task_bulk"), {"action": "pause", "ids": [digits]}).status_code == 302
    assert client.post(reverse("notification_read"), {"ids": [digits]}).status_code == 302


def test_the_bulk_form_still_takes_ascii_ids(owner):
    sig = set_status(make(owner, ECHO, run=False), Status.QUEUED)
    Notification.objects.create(owner=owner, event="task_started", title="hi", deliveries={"in_app": "sent"})
    note = Notification.objects.get(owner=owner)

    web(owner).post(reverse("task_bulk"), {"action": "pause", "ids": [str(sig.pk)]})
    web(owner).post(reverse("notification_read"), {"ids": [str(note.pk)]})

    assert Signature.objects.get(pk=sig.pk).status == Status.PAUSED
    note.refresh_from_db()
    assert note.read_at is not None


# Forms refuse what the API refuses -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("NaN", "NaN is not a JSON number"),
        ("Infinity", "Infinity is not a JSON number"),
        ("-Infinity", "-Infinity is not a JSON number"),
        ('"a\\u0000b"', "NUL"),
        ('"\\ud800"', "lone surrogate"),
    ],
)
def test_the_spec_form_refuses_what_the_api_refuses(owner, owner_client, value, problem):
    spec = '{"task": "examples.echo", "kwargs": {"value": ' + value + "}}"

    page = web(owner).post(reverse("task_new"), {"mode": "spec", "spec": spec})
    api = owner_client.post("/api/tasks/", spec, content_type="application/json")

    assert page.status_code == 400 and problem in page.content.decode()
    assert api.status_code == 400
    assert not Signature.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"), [("kw_value", "NaN"), ("kw_value", '"\\u0000"'), ("extra", '{"x": Infinity}')]
)
def test_the_task_form_refuses_nan_and_bad_text_in_json_fields(owner, field, value):
    data = {"mode": "task", "task": "examples.echo", field: value}

    page = web(owner).post(reverse("task_new"), data)

    assert page.status_code == 400
    assert not Signature.objects.exists()


def test_the_task_form_refuses_a_float_nan(owner):
    page = web(owner).post(reverse("task_new"), {"mode": "task", "task": "examples.add", "kw_a": "nan"})

    assert page.status_code == 400 and not Signature.objects.exists()


def test_the_admin_json_field_refuses_nan_and_bad_text():
    field = DepthSafeJSONField()

    for raw in ('{"x": NaN}', '["\\u0000"]', '"\\udfff"'):
        with pytest.raises(Exception) as error:
            field.clean(raw)
        assert error.type.__name__ == "ValidationError", raw
    assert field.clean('{"x": 1.5}') == {"x": 1.5}


# CSV exports -----------------------------------------------------------------------------------

FORMULAS = ['=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1)", "\tindented", "\rreturn"]


def logged(owner) -> Signature:
    sig = make(owner, ECHO)
    messages = [*FORMULAS, "plain line"]
    LogEntry.objects.bulk_create([LogEntry(signature=sig, level=20, logger="tasks.x", message=m) for m in messages])
    return sig


def test_api_csv_export_neutralises_formulas(owner, owner_client):
    sig = logged(owner)

    response = owner_client.get(url(sig, "logs"), {"format": "csv"})

    rows = list(csv.DictReader(io.StringIO(response.getvalue().decode(), newline="")))
    assert [r["message"] for r in rows] == [f"'{m}" for m in FORMULAS] + ["plain line"]


def test_page_csv_export_neutralises_formulas(owner):
    sig = logged(owner)

    response = web(owner).get(reverse("task_logs_export", args=[sig.pk]), {"format": "csv"})

    rows = list(csv.DictReader(io.StringIO(response.getvalue().decode(), newline="")))
    assert [r["message"] for r in rows] == [f"'{m}" for m in FORMULAS] + ["plain line"]


# Specs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [{}, [], ["chain"]])
def test_a_kind_that_is_not_a_string_is_a_400_naming_kind(owner_client, kind):
    response = owner_client.post("/api/tasks/", {**ECHO, "kind": kind}, format="json")

    assert response.status_code == 400 and "kind" in response.json()["errors"]
