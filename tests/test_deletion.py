"""Soft delete, restore, rerun within the window, and the purge job."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from tasks_app.models import (
    Approval,
    CallbackOn,
    Event,
    Kind,
    LogEntry,
    Notification,
    Run,
    Signature,
    Status,
    Step,
)
from tasks_app.services import deletion, execution, lifecycle
from tasks_app.services.errors import InvalidTransition, SpecError
from tests.drain import drain

pytestmark = pytest.mark.django_db
ACTOR = "tester"


def done(owner, **extra) -> Signature:
    sig = execution.submit({"task": "examples.echo", "kwargs": {"value": 1}, **extra}, owner=owner)
    drain()
    sig.refresh_from_db()
    return sig


def test_delete_marks_with_a_window_and_hides_from_live_lists(owner):
    sig = done(owner)
    deletion.delete(sig, ttl=60, actor=ACTOR)
    assert sig.deletion["status"] == "marked_for_deletion"
    assert (sig.delete_after - sig.marked_at).total_seconds() == 60
    assert not Signature.objects.live().exists()
    with pytest.raises(InvalidTransition):
        deletion.delete(sig, actor=ACTOR)
    with pytest.raises(SpecError):
        deletion.delete(done(owner), ttl=-5, actor=ACTOR)


def test_running_work_of_a_deleted_signature_continues_and_calls_back(owner):
    sig = execution.submit({"task": "examples.echo", "kwargs": {"value": 5},
                            "on_success": [{"task": "examples.double"}]}, owner=owner)
    deletion.delete(sig, ttl=60, actor=ACTOR)
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.COMPLETED and sig.callbacks.get().result == 10


def test_restore_and_rerun_work_until_delete_after(owner):
    sig = done(owner)
    deletion.delete(sig, ttl=60, actor=ACTOR)
    deletion.restore(sig, actor=ACTOR)
    assert sig.deletion is None
    deletion.delete(sig, ttl=60, actor=ACTOR)
    lifecycle.rerun(sig, actor=ACTOR)
    sig.refresh_from_db()
    assert sig.deletion is None and sig.status == Status.QUEUED
    drain()
    deletion.delete(Signature.objects.get(pk=sig.pk), ttl=60, actor=ACTOR)
    with time_machine.travel(timezone.now() + dt.timedelta(seconds=61)):
        with pytest.raises(InvalidTransition):
            deletion.restore(sig, actor=ACTOR)
        with pytest.raises(InvalidTransition):
            lifecycle.rerun(Signature.objects.get(pk=sig.pk), actor=ACTOR)


def test_purge_deletes_expired_trees_in_batches_but_never_active_ones(owner):
    finished = [done(owner, on_success=[{"task": "examples.noop"}]) for _ in range(5)]
    kept = done(owner)
    active = execution.submit({"task": "examples.noop"}, owner=owner)  # queued, not run
    for sig in finished + [active]:
        deletion.delete(sig, ttl=0, actor=ACTOR)
    deletion.delete(kept, ttl=3600, actor=ACTOR)
    assert deletion.purge(dry_run=True) == 5
    assert Signature.objects.count() == 12
    assert deletion.purge(batch_size=2) == 5
    assert set(Signature.objects.values_list("pk", flat=True)) == {active.pk, kept.pk}
    assert Run.objects.filter(signature__in=[s.pk for s in finished]).count() == 0
    drain()
    assert deletion.purge() == 1


# The purge's set-based delete ----------------------------------------------------------------------

NESTED = {  # a chain holding a swarm (with per-member callbacks) and a callback of its own
    "kind": "chain",
    "steps": [
        {"task": "examples.echo", "kwargs": {"value": 1}},
        {"kind": "swarm", "tasks": [{"task": "examples.echo", "kwargs": {"value": i}} for i in range(3)],
         "task_on_success": [{"task": "examples.noop"}], "on_success": [{"task": "examples.noop"}]},
        {"task": "examples.noop"},
    ],
    "on_success": [{"task": "examples.noop"}],
}
DEPENDANTS = {Run: "signature_id", Step: "signature_id", LogEntry: "signature_id", Approval: "signature_id",
              Notification: "signature_id"}


def workflow(owner, spec=NESTED) -> tuple[Signature, list[int]]:
    """A finished workflow with rows of every kind hanging from it; (top, ids of its whole tree)."""
    top = execution.submit(spec, owner=owner)
    drain()
    top.refresh_from_db()
    ids = list(Signature.objects.tree(top.pk).values_list("pk", flat=True))
    for sig in Signature.objects.filter(pk__in=ids):
        Step.objects.get_or_create(signature=sig, order=99, defaults={"name": "extra"})
        Approval.objects.create(signature=sig, title="ok?", status="approved")
        Notification.objects.create(owner=owner, signature=sig, event="task_completed", title="done")
        LogEntry.objects.create(signature=sig, run=sig.runs.first(), message="a line")
    return top, ids


def dependants(ids) -> dict[str, int]:
    counts = {model.__name__: model.objects.filter(**{f"{key}__in": ids}).count() for model, key in DEPENDANTS.items()}
    return {"Signature": Signature.objects.filter(pk__in=ids).count(), **counts}


def expire(*sigs: Signature) -> dt.datetime:
    """Mark for deletion with a minute's window; returns a moment after it."""
    for sig in sigs:
        deletion.delete(sig, ttl=60, actor=ACTOR)
    return timezone.now() + dt.timedelta(seconds=61)


def test_purge_deletes_nested_trees_whole_with_every_dependant_and_keeps_their_audit_events(owner):
    gone, gone_ids = workflow(owner)
    kept, kept_ids = workflow(owner)
    assert Signature.objects.filter(pk__in=gone_ids, trigger__isnull=False).exists()  # per-member callbacks
    assert Signature.objects.filter(pk__in=gone_ids, kind=Kind.SWARM, parent__isnull=False).exists()
    assert all(dependants(gone_ids).values()) and Event.objects.filter(signature_id__in=gone_ids).exists()
    later = expire(gone)
    deletion.delete(kept, ttl=3600, actor=ACTOR)
    kept_before = dependants(kept_ids)
    audit = set(Event.objects.filter(signature_ref__in=gone_ids).values_list("pk", "signature_ref", "root_ref"))

    assert deletion.purge(now=later, dry_run=True) == 1
    assert deletion.purge(now=later) == 1

    assert set(dependants(gone_ids).values()) == {0}
    assert dependants(kept_ids) == kept_before
    events = Event.objects.filter(pk__in=[pk for pk, _, _ in audit])
    assert set(events.values_list("pk", "signature_ref", "root_ref")) == audit  # every audit event stays
    assert {root for _, _, root in audit} == {gone.pk} and not events.filter(signature__isnull=False).exists()
    assert Event.objects.filter(signature_id__in=kept_ids).exists()


def test_a_restored_or_busy_workflow_in_the_middle_of_a_batch_is_kept(owner):
    sigs = [workflow(owner, {"kind": "swarm", "tasks": [{"task": "examples.noop"}] * 2})[0] for _ in range(5)]
    later = expire(*sigs)
    restored, member_running, paused = sigs[1], sigs[2], sigs[3]
    deletion.restore(restored, actor=ACTOR)
    Signature.objects.filter(parent=member_running, position=1).update(status=Status.RUNNING)
    Signature.objects.filter(pk=paused.pk).update(status=Status.PAUSED)
    kept = {sig.pk: dependants(list(Signature.objects.tree(sig.pk).values_list("pk", flat=True)))
            for sig in (restored, member_running, paused)}

    assert deletion.purge(now=later, dry_run=True) == 2
    assert deletion.purge(now=later, batch_size=100) == 2

    assert set(Signature.objects.filter(parent=None).values_list("pk", flat=True)) == set(kept)
    for pk, counts in kept.items():
        assert dependants(list(Signature.objects.tree(pk).values_list("pk", flat=True))) == counts


def test_a_member_marked_on_its_own_goes_with_what_is_below_it_and_the_callbacks_it_triggered(owner):
    swarm = execution.submit({"kind": "swarm", "tasks": [{"task": "examples.noop"}] * 3,
                              "task_on_success": [{"task": "examples.noop"}]}, owner=owner)
    drain()
    member = swarm.members.get(position=1)
    triggered = Signature.objects.get(trigger=member)
    assert triggered.callback_of_id == swarm.pk and triggered.callback_on == CallbackOn.TASK_SUCCESS
    others = set(Signature.objects.exclude(pk__in=[member.pk, triggered.pk]).values_list("pk", flat=True))
    later = expire(member)

    assert deletion.purge(now=later) == 1

    assert set(Signature.objects.values_list("pk", flat=True)) == others
    assert not Run.objects.filter(signature_id__in=[member.pk, triggered.pk]).exists()
    assert Event.objects.filter(signature_ref=member.pk, type="marked_for_deletion").exists()


def test_a_tree_that_turns_active_after_the_check_rolls_its_batch_back_and_is_kept(owner, monkeypatch):
    first, raced, last = (workflow(owner, {"kind": "chain", "steps": [{"task": "examples.noop"}] * 2})[0]
                          for _ in range(3))
    later = expire(first, raced, last)
    raced_ids = list(Signature.objects.tree(raced.pk).values_list("pk", flat=True))
    Signature.objects.filter(parent=raced, position=0).update(status=Status.QUEUED)  # a member rerun...
    before = dependants(raced_ids)
    real, calls = deletion._doomed, []

    def missed_it(rows):  # ...that the first check did not see yet
        trees, ids = real(rows)
        calls.append(trees)
        return (trees + 1, ids + raced_ids) if len(calls) == 1 else (trees, ids)

    monkeypatch.setattr(deletion, "_doomed", missed_it)
    assert deletion.purge(now=later) == 2
    assert calls == [2, 2]  # the batch ran twice: the first attempt rolled back whole
    assert dependants(raced_ids) == before
    assert set(Signature.objects.filter(parent=None).values_list("pk", flat=True)) == {raced.pk}


def test_purge_takes_a_tree_bigger_than_any_sql_parameter_limit(owner):
    swarm = Signature.objects.create(owner=owner, kind=Kind.SWARM, status=Status.COMPLETED)
    members = 33_000  # SQLite allows 32,766 parameters in a statement
    # One INSERT ... SELECT copying the swarm's row (bulk_create would take half a minute here).
    columns = [f.column for f in Signature._meta.concrete_fields if not f.primary_key and not f.generated]
    values = {"kind": "'task'", "parent_id": "s.id", "root_id": "s.id", "position": "n.i"}
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < %s) "
            f"INSERT INTO {Signature._meta.db_table} ({', '.join(columns)}) "
            f"SELECT {', '.join(values.get(c, f's.{c}') for c in columns)} FROM {Signature._meta.db_table} s, n "
            "WHERE s.id = %s",
            [members - 1, swarm.pk],
        )
    assert swarm.members.count() == members
    later = expire(swarm)
    assert deletion.purge(now=later) == 1
    assert not Signature.objects.exists()


def test_cancel_and_user_deletion_take_trees_larger_than_djangos_delete_chunks(owner, django_user_model):
    """Django's collector deletes 100 rows a statement; dependants still go before the rows they
    point to (PostgreSQL checks the RESTRICT keys of migration 0005 at each statement's end)."""
    specs = [{"task": "examples.log", "kwargs": {"lines": 1}} for _ in range(150)]
    swarm = execution.submit({"kind": "swarm", "tasks": specs, "max_concurrency": 150}, owner=owner)
    drain()
    assert Run.objects.count() == 150 and LogEntry.objects.count() == 150 and Event.objects.exists()
    lifecycle.cancel(swarm, confirm=True, actor=ACTOR)
    assert not Signature.objects.exists() and not Run.objects.exists() and not LogEntry.objects.exists()

    execution.submit({"kind": "swarm", "tasks": specs, "max_concurrency": 150}, owner=owner)
    drain()
    django_user_model.objects.filter(pk=owner.pk).delete()
    assert not Signature.objects.exists() and not Run.objects.exists() and not LogEntry.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL schema detail (migration 0005)")
def test_dependants_of_a_signature_restrict_its_deletion_and_signatures_among_themselves_do_not():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, a.attname, c.confdeltype, c.condeferrable, c.condeferred "
            "FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
            "WHERE c.contype = 'f' AND c.confrelid = 'tasks_app_signature'::regclass"
        )
        keys = {(table, column): tuple(rest) for table, column, *rest in cursor}
    restrict, no_action = ("r", True, True), ("a", True, True)
    assert keys == {
        **{(table, "signature_id"): restrict for table in (
            "tasks_app_run", "tasks_app_step", "tasks_app_logentry", "tasks_app_event", "tasks_app_approval",
            "tasks_app_notification")},
        **{("tasks_app_signature", column): no_action for column in (
            "parent_id", "root_id", "callback_of_id", "trigger_id")},
    }
