"""Outages: a worker that loses Redis or the database for a while recovers by itself, and no task is
lost, stuck or completed twice (bench/outages.py checks, see docs/reliability.md)."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.chaos_runner import run_driver

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
ARGS = "--outage 30 --tasks 12 --workers 2 --reconcile-every 3 --stuck-after 90"  # 44-46 s at a load of 2-4


@pytest.mark.timeout(600)
def test_thirty_seconds_without_redis_while_tasks_are_queued_and_running(tmp_path):
    output, seconds = run_driver("outages.py", "redis", *ARGS.split(), out_dir=tmp_path, timeout=540)

    assert "RESULT: PASS" in output
    print(output[output.index("redis outage") :], f"\ndriver wall time: {seconds:.0f} s")


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="a database outage is a server going away: PostgreSQL only (SQLite is a local file)",
)
@pytest.mark.timeout(600)
def test_thirty_seconds_without_the_database_while_tasks_are_queued_and_running(tmp_path):
    output, seconds = run_driver("outages.py", "database", *ARGS.split(), out_dir=tmp_path, timeout=540)

    assert "RESULT: PASS" in output
    print(output[output.index("database outage") :], f"\ndriver wall time: {seconds:.0f} s")
