"""Large logs: a run stores at most its line and byte limits then one marker line, a huge message is cut
with a marker, and exports stream instead of building the whole file in memory."""

from __future__ import annotations

import json
import logging
import tracemalloc

import pytest

from tasks_app.models import LogEntry, Run
from tasks_app.services import execution, logs
from tests.api_helpers import ECHO, make, url
from tests.drain import drain

pytestmark = pytest.mark.django_db


@pytest.fixture
def limits(settings):
    def set_limits(**values: int) -> None:
        settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, **values}

    return set_limits


def messages(sig) -> list[str]:
    return list(sig.logs.order_by("id").values_list("message", flat=True))


def test_a_run_past_its_line_limit_stores_one_marker_counting_the_dropped_lines(owner, limits):
    limits(LOG_MAX_LINES_PER_RUN=5)
    sig = execution.submit({"task": "examples.log", "kwargs": {"lines": 12}}, owner=owner)

    drain()

    assert messages(sig) == [f"line {i} of 12" for i in range(1, 6)] + [
        "log limit reached (5 lines per run): 7 more lines dropped"
    ]
    assert sig.logs.get(logger=logs.MARKER_LOGGER).levelname == "WARNING"


def test_a_run_past_its_byte_limit_stores_one_marker(owner, limits):
    limits(LOG_MAX_BYTES_PER_RUN=100)  # "line 1 of 50" is 12 bytes: 8 lines fit
    sig = execution.submit({"task": "examples.log", "kwargs": {"lines": 50}}, owner=owner)

    drain()

    stored = messages(sig)
    assert stored[:-1] == [f"line {i} of 50" for i in range(1, 9)]
    assert stored[-1] == "log limit reached (100 bytes per run): 42 more lines dropped"


def test_the_default_limits_are_a_hundred_thousand_lines_and_ten_megabytes(settings):
    assert settings.ORCHESTRATOR["LOG_MAX_LINES_PER_RUN"] == 100_000
    assert settings.ORCHESTRATOR["LOG_MAX_BYTES_PER_RUN"] == 10_000_000


def test_a_message_longer_than_the_line_limit_is_cut_with_a_marker(owner, limits):
    limits(LOG_MAX_LINE_CHARS=1000)
    sig = make(owner, ECHO)
    run = Run.objects.create(signature=sig, number=1)

    with logs.capture(run):
        logging.getLogger("tasks.hardening").warning("%s", "x" * 5000)
        logging.getLogger("tasks.hardening").warning("short \x00 and \ud800 stored")

    long_line, short_line = messages(sig)
    assert long_line == "x" * 1000 + " [message truncated: 4000 more characters]"
    assert short_line == "short \ufffd and ? stored"


def test_a_large_export_streams_in_little_memory(owner, owner_client):
    sig = make(owner, ECHO)
    line = "a line of a long and chatty task " * 15  # ~500 bytes
    LogEntry.objects.bulk_create(
        [LogEntry(signature=sig, level=20, logger="tasks.chatty", message=f"{i} {line}") for i in range(20_000)],
        batch_size=2000,
    )

    owner_client.get(url(make(owner, ECHO), "logs"), {"format": "csv"}).getvalue()  # first-request imports apart
    tracemalloc.start()
    try:
        response = owner_client.get(url(sig, "logs"), {"format": "csv"})
        size = sum(len(chunk) for chunk in response.streaming_content)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert size > 10_000_000  # the whole log: 20,000 lines of ~500 bytes
    assert peak < 5_000_000, f"exporting 10 MB held {peak:,} bytes at its peak"


@pytest.mark.parametrize("fmt", ["json", "csv", "text"])
def test_the_page_exports_stream_every_line(owner, fmt):
    from django.test import Client
    from django.urls import reverse

    sig = make(owner, ECHO)
    LogEntry.objects.bulk_create([LogEntry(signature=sig, level=30, message=f"line {i}") for i in range(4500)])
    client = Client()
    client.force_login(owner)

    response = client.get(reverse("task_logs_export", args=[sig.pk]), {"format": fmt})

    assert response.streaming
    body = response.getvalue().decode()
    assert body.count("line ") == 4500 and "line 4499" in body
    if fmt == "json":
        assert [e["message"] for e in json.loads(body)][-2:] == ["line 4498", "line 4499"]
