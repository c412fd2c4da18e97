"""services.bulk.insert writes what the ORM would, on both databases (arrays bound in binary on PostgreSQL)."""

from __future__ import annotations

import gc
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks_app.models import Signature
from tasks_app.services import bulk

AWKWARD = ['a "quoted", {braced} value', "back\\slash", "NULL", "", "ünïcødé ✓", "comma,semi;colon", "{}", "[1, 2]"]
COMPARED = ("kind", "name", "task_name", "kwargs", "inbound", "config", "tags", "status", "priority", "retries",
            "retry_backoff", "timeout", "idempotency_key", "parent_id", "position", "result", "error", "checkpoint",
            "created_at", "started_at")


def signatures(owner, parent=None, batch: str = "bulk") -> list[Signature]:
    now = timezone.now().replace(microsecond=123456)
    rows = []
    for i, text in enumerate(AWKWARD * 3):
        rows.append(Signature(
            owner=owner, parent=parent, position=i, name=text, task_name=f"examples.{text}"[:200],
            kwargs={"text": text, "nested": {"list": [i, None, True, 1.5], "deep": {"x": text}}} if i % 2 else {},
            inbound={"value": i} if i % 3 else {}, tags=[text, i] if i % 4 else [],
            retries=i, retry_backoff=0.5 * i, timeout=None if i % 2 else 2.5 * i,
            idempotency_key=None if i % 5 else f"{batch}:{i}-{text}",
            result=None if i % 2 else {"out": text}, error=None, checkpoint=None if i % 3 else [text],
            created_at=now - timedelta(seconds=i), started_at=None if i % 2 else now,
        ))
    return rows


def read_back(sigs: list[Signature]) -> list[dict]:
    rows = list(Signature.objects.filter(pk__in=[s.pk for s in sigs]).order_by("pk").values(*COMPARED))
    for row in rows:  # unique per owner: each batch has its own prefix
        row["idempotency_key"] = row["idempotency_key"] and row["idempotency_key"].split(":", 1)[1]
    return rows


def test_bulk_rows_read_back_as_the_orm_writes_them(owner):
    parent = Signature.objects.create(owner=owner, kind="swarm", name="parent")
    expected = signatures(owner, parent)
    saved = signatures(owner, parent, batch="orm")
    for sig in saved:
        sig.save()
    bulk.insert(expected, batch_size=7)  # several statements, the last one short

    assert all(sig.pk for sig in expected)
    assert len({sig.pk for sig in expected}) == len(expected)
    by_orm = read_back(saved)
    by_bulk = read_back(expected)
    assert by_bulk == by_orm
    assert [row["position"] for row in by_bulk] == list(range(len(expected)))


def test_the_statements_are_in_djangos_query_log(owner):
    with CaptureQueriesContext(connection) as queries:
        bulk.insert(signatures(owner), batch_size=10)
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 3  # 24 rows, 10 a statement


def test_execute_wrappers_see_each_statement(owner):
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        bulk.insert(signatures(owner), batch_size=10)
    assert len([sql for sql in seen if sql.startswith("INSERT")]) == 3


def test_the_collector_is_paused_while_members_are_added_and_enabled_again(owner, monkeypatch):
    from tasks_app.services import execution, specs, swarms

    swarm = execution.submit({"kind": "swarm", "closed": False, "tasks": []}, owner=owner, run=False)
    seen = []
    add_members = specs.add_members
    monkeypatch.setattr(specs, "add_members", lambda *a, **k: seen.append(gc.isenabled()) or add_members(*a, **k))
    swarms.add_tasks(swarm, [{"task": "examples.noop"}] * 3, run=False)
    assert seen == [False] and gc.isenabled()
    with pytest.raises(ValueError), bulk.collector_paused():
        raise ValueError
    assert gc.isenabled()
    gc.disable()
    try:
        with bulk.collector_paused():  # a caller that paused it keeps it paused
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
