"""GET /api/metrics/ and /api/resume-reports/, scoped to what the user may see."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks_app.models import ResumeReport, Status
from tests.api_helpers import ECHO, make, set_status

pytestmark = pytest.mark.django_db


def finished(sig, status: str, seconds: float) -> None:
    end = timezone.now()
    set_status(sig, status, started_at=end - timedelta(seconds=seconds), finished_at=end)


def test_counts_throughput_failure_rate_and_percentiles(owner_client, owner, stranger):
    for seconds in (1, 2, 3, 4):
        finished(make(owner, ECHO), Status.COMPLETED, seconds)
    finished(make(owner, {"task": "examples.fail"}), Status.FAILED, 1)
    make(owner, ECHO)
    finished(make(stranger, ECHO), Status.COMPLETED, 100)

    body = owner_client.get("/api/metrics/").json()

    assert body["counts"] == {
        **{status: 0 for status in Status.values},
        "completed": 4,
        "failed": 1,
        "pending": 1,
        "marked_for_deletion": 0,
    }
    assert sum(point["completed"] for point in body["throughput"]["points"]) == 4
    assert (body["finished"], body["failed"], body["failure_rate"]) == (5, 1, 0.2)
    echo = next(row for row in body["tasks"] if row["task"] == "examples.echo")
    assert (echo["finished"], echo["p50_ms"], echo["p99_ms"]) == (4, 2000, 4000)


def test_range_and_since_choose_the_window(owner_client, owner):
    finished(make(owner, ECHO), Status.COMPLETED, 1)
    later = (timezone.now() + timedelta(minutes=1)).isoformat()

    assert owner_client.get("/api/metrics/", {"range": "7d"}).json()["throughput"]["bucket"] == "day"
    assert owner_client.get("/api/metrics/", {"since": later}).json()["failure_rate"] is None
    assert owner_client.get("/api/metrics/", {"since": "last week"}).status_code == 400
    assert owner_client.get("/api/metrics/", {"range": "1y"}).status_code == 400


def test_staff_metrics_cover_everyone(owner, stranger, operator_client):
    finished(make(owner, ECHO), Status.COMPLETED, 1)
    finished(make(stranger, ECHO), Status.COMPLETED, 1)

    assert operator_client.get("/api/metrics/").json()["counts"]["completed"] == 2


def test_resume_reports_show_users_only_their_own_items(owner, owner_client, stranger, operator_client):
    mine, theirs = make(owner, ECHO), make(stranger, ECHO)
    ResumeReport.objects.create(
        trigger="worker start",
        resumed=[{"task_id": mine.pk, "title": "mine"}, {"task_id": theirs.pk, "title": "theirs"}],
    )
    ResumeReport.objects.create(trigger="periodic", skipped=[{"task_id": theirs.pk, "title": "theirs"}])

    own_view = owner_client.get("/api/resume-reports/").json()
    staff_view = operator_client.get("/api/resume-reports/").json()

    assert own_view["count"] == 1
    assert own_view["results"][0]["resumed"] == [{"task_id": mine.pk, "title": "mine"}]
    assert staff_view["count"] == 2
