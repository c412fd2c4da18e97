"""GET /api/tasks/{id}/logs: the whole tree's logs, by level and text, as JSON pages, CSV or text."""

from __future__ import annotations

import csv
import io

import pytest

from tasks_app.models import LogEntry, Signature
from tests.api_helpers import ECHO, make, url

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(owner) -> Signature:
    """A chain whose two steps logged: INFO and ERROR lines in the first, a WARNING in the second."""
    chain = make(owner, {"kind": "chain", "steps": [ECHO, ECHO]})
    first, second = chain.members.order_by("position")
    LogEntry.objects.bulk_create(
        [
            LogEntry(signature=first, level=20, logger="tasks.echo", message="loading customers"),
            LogEntry(signature=first, level=40, logger="tasks.echo", message="customers table is locked"),
            LogEntry(signature=second, level=30, logger="tasks.echo", message="slow disk, retrying"),
        ]
    )
    return chain


def test_json_covers_the_descendants(owner_client, chain):
    response = owner_client.get(url(chain, "logs"))

    assert response.status_code == 200
    assert [(e["level"], e["message"]) for e in response.json()] == [
        ("INFO", "loading customers"),
        ("ERROR", "customers table is locked"),
        ("WARNING", "slow disk, retrying"),
    ]
    assert set(response.json()[0]) == {"id", "task_id", "at", "level", "logger", "message"}


def test_level_is_that_level_and_above(owner_client, chain):
    messages = [e["message"] for e in owner_client.get(url(chain, "logs"), {"level": "WARNING"}).json()]

    assert messages == ["customers table is locked", "slow disk, retrying"]


def test_q_searches_the_text(owner_client, chain):
    messages = [e["message"] for e in owner_client.get(url(chain, "logs"), {"q": "customers locked"}).json()]

    assert messages == ["customers table is locked"]


def test_a_member_sees_only_its_own_logs(owner_client, chain):
    second = chain.members.get(position=1)

    assert [e["message"] for e in owner_client.get(url(second, "logs")).json()] == ["slow disk, retrying"]


def test_limit_and_after_page_through_with_a_next_link(owner_client, chain):
    first = owner_client.get(url(chain, "logs"), {"limit": 2})
    after = first.json()[-1]["id"]
    rest = owner_client.get(url(chain, "logs"), {"limit": 2, "after": after})

    assert len(first.json()) == 2
    assert f"after={after}" in first["Link"] and 'rel="next"' in first["Link"]
    assert [e["message"] for e in rest.json()] == ["slow disk, retrying"]
    assert "Link" not in rest


def test_csv_is_an_attachment(owner_client, chain):
    response = owner_client.get(url(chain, "logs"), {"format": "csv", "level": "ERROR"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == f'attachment; filename="task-{chain.pk}-logs.csv"'
    rows = list(csv.DictReader(io.StringIO(response.getvalue().decode())))
    assert [(r["level"], r["message"]) for r in rows] == [("ERROR", "customers table is locked")]


def test_text_is_an_attachment(owner_client, chain):
    response = owner_client.get(url(chain, "logs"), {"format": "text"})

    assert response["Content-Type"].startswith("text/plain")
    assert response["Content-Disposition"].endswith('.txt"')
    lines = response.getvalue().decode().splitlines()
    assert len(lines) == 3 and "WARNING" in lines[2] and "slow disk" in lines[2]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"level": "LOUD"}, "level"), ({"format": "xml"}, "format"), ({"limit": 0}, "limit"), ({"after": "x"}, "after")],
)
def test_bad_parameters_are_400(owner_client, chain, params, field):
    response = owner_client.get(url(chain, "logs"), params)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert field in response.json()["errors"]


def test_errors_are_json_even_when_csv_was_asked(owner_client, owner):
    response = owner_client.get(url(12345, "logs"), {"format": "csv"})

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
