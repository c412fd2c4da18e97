"""Races, property-based: two lifecycle operations at once against the real database.

Each example builds a workflow (hypothesis picks its shape and how far it has run), then starts
two operations (sometimes a worker finishing a job as a third) in threads of their own, each with
its own database connection, released together by a barrier after small offsets. Afterwards the
outcome must be one that the operations give in some serial order, and the database must hold
no lost work (every queued run has its RQ job; every workflow ends once drained), no zombie rows
(nothing active under an ended or paused parent, nothing left of a purged or cancelled tree, no
job in Redis that does anything when a worker takes it: a stale job is allowed, as DESIGN.md says,
only because its claim changes nothing) and no double callbacks.

SQLite serialises the writers (immediate transactions, busy timeout); on PostgreSQL they
interleave under row locks. The same properties hold on both. ORCHESTRATOR_RACE_EXAMPLES sets the
examples per property (15 by default). The tests flush their Redis database per example: give a
run of its own a Redis database of its own (REDIS_URL=redis://.../12) when others share the server.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections import Counter
from collections.abc import Callable

import django_rq
import pytest
from django.conf import settings as django_settings
from django.db import connection, connections, transaction
from django.db.models import Count
from django.utils import timezone
from hypothesis import HealthCheck, Phase, assume, given, note, settings
from hypothesis import strategies as st

from tasks_app.models import (
    Approval,
    CallbackOn,
    Event,
    Kind,
    LogEntry,
    Notification,
    ResumeReport,
    Run,
    RunStatus,
    Signature,
    Status,
    Step,
    WorkerProcess,
)
from tasks_app.services import deletion, execution, lifecycle, reconcile, swarms, transport, tree
from tasks_app.services.errors import InvalidTransition
from tests.api_helpers import fresh
from tests.drain import next_run

# Several examples of real threads per test: on a loaded machine with PostgreSQL a test can take
# longer than the suite's default timeout of 120 s.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]
ACTOR = "racer"

examples = settings(
    max_examples=int(os.environ.get("ORCHESTRATOR_RACE_EXAMPLES", 15)),
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Workflow shapes --------------------------------------------------------------------------------

NOOP = {"task": "examples.noop"}
task = st.integers(0, 9).map(lambda v: {"task": "examples.echo", "kwargs": {"value": v}})
chain = st.lists(task, min_size=2, max_size=3).map(lambda steps: {"kind": "chain", "steps": steps})


def _swarm(members: list[dict], limit: int) -> dict:
    return {"kind": "swarm", "tasks": members, "max_concurrency": limit, "task_on_success": [NOOP]}


swarm = st.builds(_swarm, st.lists(task, min_size=1, max_size=3), st.integers(1, 2))
nested = st.one_of(
    st.builds(lambda s, last: {"kind": "chain", "steps": [s, last]}, swarm, st.one_of(task, chain)),
    st.builds(_swarm, st.lists(chain, min_size=1, max_size=2), st.integers(1, 2)),
)
shapes = st.one_of(task, chain, swarm, nested).map(lambda spec: {**spec, "on_success": [NOOP], "on_error": [NOOP]})
offsets = st.sampled_from([0.0, 0.0, 0.0005, 0.001, 0.003])
REFUSED = (InvalidTransition, Signature.DoesNotExist)
# Work that is not over: a purge must keep it, a swarm member holding it takes a slot.
HELD = (Status.QUEUED, Status.RUNNING, Status.WAITING_APPROVAL, Status.PAUSED)


@pytest.fixture(autouse=True)
def _quiet_channel_layer(settings) -> None:
    """Live messages are not what these tests watch: an in-memory layer spares the loaded machine."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


# Racing ------------------------------------------------------------------------------------------


def race(*calls: tuple[Callable, float]) -> list[tuple[str, object]]:
    """Run the calls in threads started together on a barrier, each after its offset.

    Returns ("ok", result) or ("refused", error) per call, in order; anything else is re-raised.
    """
    barrier = threading.Barrier(len(calls))
    outcomes: list[tuple[str, object]] = [("error", RuntimeError("did not finish"))] * len(calls)

    def run(i: int, fn: Callable, offset: float) -> None:
        try:
            barrier.wait(timeout=30)
            time.sleep(offset)
            outcomes[i] = ("ok", fn())
        except REFUSED as exc:
            outcomes[i] = ("refused", exc)
        except BaseException as exc:  # reported in the test's thread
            outcomes[i] = ("error", exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, fn, offset)) for i, (fn, offset) in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a racing operation hung for a minute"
    for kind, value in outcomes:
        if kind == "error":
            raise AssertionError(f"a racing operation crashed: {value!r}") from value
    return outcomes


def kinds(outcomes) -> tuple[str, ...]:
    return tuple(kind for kind, _ in outcomes)


# Workers and Redis -------------------------------------------------------------------------------


def _queue_keys() -> list[str]:
    return [f"rq:queue:{name}" for name in django_settings.ORCHESTRATOR_QUEUES]


def job_ids() -> list[str]:
    """The job ids waiting on the orchestrator's queues (a duplicate enqueue shows twice)."""
    connection = django_rq.get_connection(django_settings.ORCHESTRATOR_QUEUES[0])
    return [jid.decode() for key in _queue_keys() for jid in connection.lrange(key, 0, -1)]


def take_job(job_id: str) -> None:
    """A worker pops a job: every copy of it leaves the queues."""
    connection = django_rq.get_connection(django_settings.ORCHESTRATOR_QUEUES[0])
    for key in _queue_keys():
        connection.lrem(key, 0, job_id)


def work_one() -> bool:
    """What a worker does with the next job: take it off its queue and execute it."""
    run = next_run()
    if run is None:
        return False
    take_job(transport.job_id(run))
    execution.execute(run.signature_id, run.number)
    return True


def work(limit: int = 300) -> int:
    for done in range(limit):
        if not work_one():
            return done
    raise AssertionError(f"still work queued after {limit} jobs")


def reset(redis_conn) -> None:
    """Each example starts from an empty database and Redis (the test's own flush comes only at its end)."""
    tables = [m._meta.db_table for m in (Notification, Approval, LogEntry, Step, Run, Event, ResumeReport,
                                         WorkerProcess, Signature)]
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")
    redis_conn.flushdb()


def submit(owner, spec: dict, jobs: int = 0) -> Signature:
    root = execution.submit(spec, owner=owner, actor=ACTOR)
    for _ in range(jobs):
        work_one()
    return Signature.objects.get(pk=root.pk)


# Invariants --------------------------------------------------------------------------------------


def assert_consistent() -> None:
    """No orphans, no zombies, runs agree with signatures and Redis, callbacks fired at most once."""
    sigs = {s.pk: s for s in Signature.objects.all()}
    for sig in sigs.values():
        for ref in (sig.parent_id, sig.callback_of_id, sig.root_id, sig.trigger_id):
            assert ref is None or ref in sigs, f"#{sig.pk} hangs on a deleted #{ref}"
    for model in (Run, Step, LogEntry, Approval):
        assert not model.objects.exclude(signature_id__in=sigs).exists(), f"{model.__name__} of a deleted signature"
    assert not Notification.objects.filter(signature__isnull=False).exclude(signature_id__in=sigs).exists()
    _assert_runs_agree(sigs)
    _assert_nothing_active_under_an_ended_parent(sigs)
    _assert_redis_agrees()
    _assert_callbacks_fired_at_most_once(sigs)


def _per_signature(queryset) -> Counter:
    return Counter(dict(queryset.values_list("signature_id").annotate(n=Count("id")).order_by()))


def _assert_runs_agree(sigs: dict[int, Signature]) -> None:
    active = Counter()
    for run in Run.objects.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING)):
        sig = sigs[run.signature_id]
        active[sig.pk] += 1
        allowed = (Status.QUEUED,) if run.status == RunStatus.QUEUED else (Status.RUNNING, Status.PAUSED)
        assert sig.status in allowed, f"a {run.status} run of a {sig.status} signature #{sig.pk}"
    completed = _per_signature(Run.objects.filter(status=RunStatus.COMPLETED))
    ended = _per_signature(Event.objects.filter(type=Status.COMPLETED))
    for sig in sigs.values():
        if sig.kind != Kind.TASK:
            continue
        if sig.status in (Status.QUEUED, Status.RUNNING):
            assert active[sig.pk] == 1, f"{sig.status} #{sig.pk} has {active[sig.pk]} active runs"
        assert completed[sig.pk] == ended[sig.pk], f"#{sig.pk}: {completed[sig.pk]} runs, {ended[sig.pk]} completions"


def _assert_nothing_active_under_an_ended_parent(sigs: dict[int, Signature]) -> None:
    rerun = set(Event.objects.filter(type="rerun").values_list("signature_id", flat=True))
    for sig in sigs.values():
        if sig.status not in (Status.QUEUED, Status.RUNNING, Status.WAITING_APPROVAL):
            continue
        if sig.parent_id is not None and sig.pk not in rerun:  # a member rerun on its own runs alone
            parent = sigs[sig.parent_id]
            assert parent.status == Status.RUNNING, f"{sig.status} #{sig.pk} under a {parent.status} container"
        if sig.callback_of_id is not None:
            owner = sigs[sig.callback_of_id]
            assert owner.status in (Status.COMPLETED, Status.FAILED, Status.RUNNING), (
                f"callback #{sig.pk} fired for a {owner.status} signature"
            )


def _assert_redis_agrees() -> None:
    """Every queued run has its job; a stale job (its run ended, paused or deleted; after-commit
    sends of two transactions can land in either order) changes nothing when a worker takes it."""
    jobs = set(job_ids())
    queued = {transport.job_id(run) for run in Run.objects.filter(status=RunStatus.QUEUED, not_before=None)}
    assert queued <= jobs, f"queued runs without a job (lost work): {sorted(queued - jobs)}"
    for stale in sorted(jobs - queued):
        before = _snapshot()
        _, signature_id, number = stale.rsplit("-", 2)
        take_job(stale)
        execution.execute(int(signature_id), int(number))
        assert _snapshot() == before, f"the stale job {stale} changed the database"


def _snapshot() -> tuple:
    return (
        sorted(Signature.objects.values_list("pk", "status")),
        sorted(Run.objects.values_list("pk", "status")),
        Event.objects.count(),
    )


def _assert_callbacks_fired_at_most_once(sigs: dict[int, Signature]) -> None:
    fired = _per_signature(Event.objects.filter(type="queued"))
    ends = {status: _per_signature(Event.objects.filter(type=status)) for status in (Status.COMPLETED, Status.FAILED)}
    per_member = Counter()
    for sig in sigs.values():
        if sig.callback_of_id is None:
            continue
        if sig.trigger_id is not None:
            per_member[(sig.trigger_id, sig.callback_on)] += 1
            assert fired[sig.pk] <= 1, f"per-member callback #{sig.pk} fired {fired[sig.pk]} times"
            continue
        wanted = Status.COMPLETED if sig.callback_on == CallbackOn.SUCCESS else Status.FAILED
        times = ends[wanted][sig.callback_of_id]
        assert fired[sig.pk] <= times, f"callback #{sig.pk} fired {fired[sig.pk]} times for {times} ends"
        if sigs[sig.callback_of_id].status == wanted:
            assert fired[sig.pk] >= 1, f"callback #{sig.pk} of a {wanted} signature never fired"
    assert all(n == 1 for n in per_member.values()), f"per-member callbacks fired twice: {per_member}"
    for sig in sigs.values():
        parent = sigs.get(sig.parent_id)
        calls_back = parent is not None and parent.kind == Kind.SWARM and parent.config.get("task_on_success")
        if calls_back and sig.status == Status.COMPLETED:
            assert per_member[(sig.pk, CallbackOn.TASK_SUCCESS)] == 1, f"member #{sig.pk} never called back"


def assert_finishes(root: Signature, statuses=(Status.COMPLETED,)) -> Signature:
    """No lost work: drained, the workflow ends and nothing is left in flight."""
    work()
    root = fresh(root)
    assert root.status in statuses, f"the workflow ended {root.status}: {root.error} {describe(root)}"
    nodes = Signature.objects.tree(root.pk)
    assert not nodes.exclude(status__in=(Status.COMPLETED, Status.SKIPPED, Status.FAILED)).exists()
    assert not Run.objects.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING)).exists()
    assert_consistent()
    assert job_ids() == []
    return root


def describe(root: Signature) -> list:
    return [(s.pk, s.kind, s.parent_id, s.callback_of_id, s.status, s.error and s.error.get("message"),
             list(s.runs.values_list("number", "status")))
            for s in Signature.objects.tree(root.pk).order_by("pk")]


def leaves(root: Signature):
    return Signature.objects.tree(root.pk).filter(kind=Kind.TASK, callback_of__isnull=True)


def tree_rows(ids) -> int:
    return sum(
        model.objects.filter(**{key: ids}).count()
        for model, key in (
            (Signature, "pk__in"), (Run, "signature_id__in"), (Step, "signature_id__in"),
            (LogEntry, "signature_id__in"), (Approval, "signature_id__in"), (Notification, "signature_id__in"),
        )
    )


# 1. Purge against restore and rerun ---------------------------------------------------------------


@examples
@given(shapes, st.integers(0, 8), st.sampled_from(["restore", "rerun", "rerun member"]), offsets, offsets)
def test_purge_against_restore_or_rerun_loses_nothing_and_purges_nothing_running(
    owner, redis_conn, spec, jobs, action, purge_offset, action_offset
):
    reset(redis_conn)
    note(f"{spec=} {jobs=} {action=} {purge_offset=} {action_offset=}")
    root = submit(owner, spec, jobs)
    target = root
    if action == "rerun member":
        target = Signature.objects.filter(parent=root).order_by("position").first()
        assume(target is not None and root.status == Status.COMPLETED)  # a member of a running one: not this race
    deletion.delete(root, ttl=60, actor=ACTOR)
    ids = tree.descendant_ids(root)
    busy = Signature.objects.filter(pk__in=ids, status__in=HELD).exists()
    per_member_callbacks = set(Signature.objects.filter(pk__in=ids, trigger__isnull=False).values_list("pk", flat=True))
    completed_before = Counter(Run.objects.filter(status=RunStatus.COMPLETED).values_list("signature_id", flat=True))
    later = timezone.now() + dt.timedelta(seconds=61)
    act = {"restore": deletion.restore, "rerun": lifecycle.rerun, "rerun member": lifecycle.rerun}[action]

    (_, purged), (act_kind, _) = race(
        (lambda: deletion.purge(now=later), purge_offset), (lambda: act(fresh(target), actor=ACTOR), action_offset)
    )

    if purged:  # purge first: the whole tree went; the restore or rerun found nothing
        assert not busy, "the purge deleted a tree with active work"
        assert act_kind == "refused", "the purge deleted a tree just restored or rerun"
        assert tree_rows(ids) == 0, "the purge left part of the tree"
        assert_consistent()
        return
    # Nothing went, except the per-member callbacks that a rerun replaces.
    kept = [pk for pk in ids if act_kind != "ok" or action == "restore" or pk not in per_member_callbacks]
    assert Signature.objects.filter(pk__in=kept).count() == len(kept), "a partial purge"
    if act_kind == "refused":  # only a rerun of unfinished work is refused, and then purge must wait
        assert action != "restore" and busy
    elif action != "rerun member":
        assert fresh(root).deletion is None
    assert_consistent()
    if fresh(root).delete_after is not None:  # still marked: it runs to its end, then the purge takes it whole
        work()
        assert_consistent()
        purged = deletion.purge(now=later)
        assert (purged, tree_rows(ids)) == (1, 0), describe(root)
        return
    assert_finishes(root)
    if act_kind == "ok" and action != "restore":
        for pk in tree.descendant_ids(target):
            sig = Signature.objects.get(pk=pk)
            if sig.kind == Kind.TASK and sig.callback_of_id is None:
                done = sig.runs.filter(status=RunStatus.COMPLETED).count()
                assert done == completed_before[pk] + 1, f"#{pk} completed {done} times after one rerun"


# 2. Cancel against a member's completion ----------------------------------------------------------


@examples
@given(shapes, st.integers(0, 6), st.sampled_from(["root", "container", "member"]),
       st.sampled_from(["complete", "fail", "execute"]), offsets, offsets)
def test_cancel_against_member_completion_deletes_everything_and_calls_back_nothing_late(
    owner, redis_conn, spec, jobs, target_kind, finishing, cancel_offset, finish_offset
):
    reset(redis_conn)
    note(f"{spec=} {jobs=} {target_kind=} {finishing=} {cancel_offset=} {finish_offset=}")
    root = submit(owner, spec, jobs)
    run = Run.objects.filter(status=RunStatus.QUEUED, signature__callback_of__isnull=True).order_by("pk").first()
    assume(run is not None)
    member = run.signature
    target = {"root": root, "member": member,
              "container": Signature.objects.filter(pk=member.parent_id).first() or root}[target_kind]
    if finishing == "execute":
        finish = lambda: execution.execute(member.pk, run.number)  # noqa: E731
    else:
        take_job(transport.job_id(run))
        sig, claimed = execution.claim(member.pk, run.number)
        if finishing == "complete":
            finish = lambda: execution.complete(sig, claimed, sig.kwargs.get("value"))  # noqa: E731
        else:
            finish = lambda: execution.fail(sig, claimed, {"type": "RuntimeError", "message": "boom",  # noqa: E731
                                                           "traceback": "", "task_id": sig.pk})
    doomed = tree.descendant_ids(target)

    (cancel_kind, _), (finish_kind, error) = race(
        (lambda: lifecycle.cancel(fresh(target), confirm=True, actor=ACTOR), cancel_offset), (finish, finish_offset)
    )
    assert cancel_kind == "ok"
    assert finish_kind == "ok", f"a late result of a cancelled run crashed its job: {error!r}"

    assert not Signature.objects.filter(pk__in=doomed).exists()
    assert tree_rows(doomed) == 0
    audit = Event.objects.get(type="cancelled", signature_ref=target.pk)
    assert audit.data["deleted"]["signatures"] >= len(doomed)
    assert_consistent()
    if target.pk == root.pk:
        assert not Signature.objects.exists() and work() == 0
        return
    # The rest goes on; a member's failure may fail a chain, and then the workflow.
    assert_finishes(root, (Status.COMPLETED, Status.FAILED) if finishing == "fail" else (Status.COMPLETED,))


# 3. Pause against resume -------------------------------------------------------------------------


def _serial_outcomes(held: bool, ops: tuple[str, ...]) -> set[tuple[tuple[str, ...], bool]]:
    """(per-op outcome, held at the end) of every serial order of the ops, from ``held``."""
    results = set()
    for order in ([0, 1], [1, 0]):
        state, outcome = held, [None, None]
        for i in order:
            allowed = (not state) if ops[i] == "pause" else state
            outcome[i] = "ok" if allowed else "refused"
            if allowed:
                state = ops[i] == "pause"
        results.add((tuple(outcome), state))
    return results


@examples
@given(shapes, st.integers(0, 3), st.booleans(),
       st.sampled_from([("pause", "resume"), ("resume", "pause"), ("resume", "resume"), ("pause", "pause")]),
       st.booleans(), offsets, offsets, offsets)
def test_pause_against_resume_ends_held_or_running_never_half(
    owner, redis_conn, spec, jobs, paused_first, ops, with_worker, first_offset, second_offset, worker_offset
):
    reset(redis_conn)
    note(f"{spec=} {jobs=} {paused_first=} {ops=} {with_worker=} {first_offset=} {second_offset=} {worker_offset=}")
    root = submit(owner, spec, jobs)
    assume(root.status not in (Status.COMPLETED, Status.FAILED))
    if paused_first:
        root = lifecycle.pause(root, actor=ACTOR)
    act = {"pause": lifecycle.pause, "resume": lifecycle.resume}
    calls = [(lambda op=op: act[op](fresh(root), actor=ACTOR), offset)
             for op, offset in zip(ops, (first_offset, second_offset), strict=True)]
    if with_worker:
        calls.append((work_one, worker_offset))

    outcomes = race(*calls)
    note(f"{outcomes=}")

    root = fresh(root)
    if root.status not in (Status.COMPLETED, Status.FAILED):
        held = root.status == Status.PAUSED
        assert (kinds(outcomes[:2]), held) in _serial_outcomes(paused_first, ops)
        nodes = Signature.objects.tree(root.pk)
        if held:  # held means held everywhere: nothing queued, no job waiting
            assert not nodes.filter(status=Status.QUEUED).exists()
            assert not Run.objects.filter(signature__in=nodes, status=RunStatus.QUEUED).exists()
        else:
            assert not nodes.filter(status=Status.PAUSED).exists(), "a resumed workflow kept paused members"
    assert_consistent()
    if root.status == Status.PAUSED:
        lifecycle.resume(root, actor=ACTOR)
    root = assert_finishes(root)
    for leaf in leaves(root):
        assert leaf.runs.filter(status=RunStatus.COMPLETED).count() == 1, f"#{leaf.pk} ran twice"


# 4. Two reconcile passes at once -----------------------------------------------------------------


@examples
@given(shapes, st.integers(0, 2), st.lists(st.sampled_from(["lost", "job missing", "fine"]), min_size=1, max_size=4),
       offsets, offsets)
def test_two_reconcile_passes_at_once_resume_each_lost_run_once(
    owner, redis_conn, spec, jobs, fates, first_offset, second_offset
):
    reset(redis_conn)
    note(f"{spec=} {jobs=} {fates=} {first_offset=} {second_offset=}")
    root = submit(owner, spec, jobs)
    queued = list(Run.objects.filter(status=RunStatus.QUEUED).order_by("pk"))
    assume(queued)
    lost, missing = [], []
    for run, fate in zip(queued, fates, strict=False):  # runs beyond the fates keep their job
        if fate == "lost":  # claimed by a worker that died (no heartbeat)
            take_job(transport.job_id(run))
            execution.claim(run.signature_id, run.number)
            lost.append(run)
        elif fate == "job missing":  # Redis lost the job
            take_job(transport.job_id(run))
            redis_conn.delete(f"rq:job:{transport.job_id(run)}")
            missing.append(run)

    race((lambda: reconcile.run_pass(trigger="a"), first_offset),
         (lambda: reconcile.run_pass(trigger="b"), second_offset))

    resumed = Counter((item["task_id"], item["reason"]) for report in ResumeReport.objects.all()
                      for item in report.resumed)
    for run in lost:
        runs = list(Run.objects.filter(signature_id=run.signature_id).order_by("number"))
        assert [r.status for r in runs] == [RunStatus.LOST, RunStatus.QUEUED], "a lost run resumed twice or never"
        assert runs[1].attempt == run.attempt
        assert resumed[(run.signature_id, "worker gone")] == 1
    for run in missing:
        assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
        assert resumed[(run.signature_id, "job missing")] >= 1
    assert all(not report.failures for report in ResumeReport.objects.all())
    assert_consistent()
    root = assert_finishes(root)
    for leaf in leaves(root):
        assert leaf.runs.filter(status=RunStatus.COMPLETED).count() == 1, f"#{leaf.pk} ran twice"


# 5. Bulk add against close -----------------------------------------------------------------------


def _open_swarm(members: list[dict], limit: int, max_tasks: int | None) -> dict:
    return {"kind": "swarm", "closed": False, "tasks": members, "max_concurrency": limit, "max_tasks": max_tasks,
            "task_on_success": [NOOP], "on_success": [NOOP], "on_error": [NOOP]}


open_swarms = st.builds(_open_swarm, st.lists(task, max_size=3), st.integers(1, 3),
                        st.one_of(st.none(), st.integers(3, 6)))


def _serial_adds(count: int, closed: bool, max_tasks: int | None, ops: list[tuple[str, int]]):
    """(per-op outcome, members at the end) of every serial order of the ops."""
    results = set()
    for order in ([0, 1], [1, 0]):
        n, shut, outcome = count, closed, [None, None]
        for i in order:
            op, size = ops[i]
            if shut or (op == "add" and max_tasks is not None and n + size > max_tasks):
                outcome[i] = "refused"
                continue
            outcome[i] = "ok"
            if op == "close":
                shut = True
            else:
                n += size
                shut = max_tasks is not None and n >= max_tasks
        results.add((tuple(outcome), n))
    return results


@examples
@given(open_swarms, st.booleans(), st.integers(0, 3),
       st.sampled_from([("add", "close"), ("close", "add"), ("add", "add")]),
       st.integers(1, 3), st.integers(1, 3), st.booleans(), offsets, offsets, offsets)
def test_bulk_add_against_close_adds_all_or_nothing_and_the_swarm_ends_once(
    owner, redis_conn, swarm_spec, nest, jobs, ops, first_size, second_size, with_worker,
    first_offset, second_offset, worker_offset
):
    reset(redis_conn)
    note(f"{swarm_spec=} {nest=} {jobs=} {ops=} {first_size=} {second_size=} {with_worker=} "
         f"{first_offset=} {second_offset=} {worker_offset=}")
    spec = {"kind": "chain", "steps": [swarm_spec, {"task": "examples.noop"}]} if nest else swarm_spec
    root = submit(owner, spec, jobs)
    target = Signature.objects.get(pk=root.pk) if not nest else root.members.get(position=0)
    before, closed = target.members.count(), bool(target.config.get("closed"))
    sizes = (first_size, second_size)
    specs_for = {i: [{"task": "examples.echo", "kwargs": {"value": 100 * i + j}} for j in range(sizes[i])]
                 for i in range(2)}
    act = {"add": lambda i: swarms.add_tasks(fresh(target), specs_for[i], actor=ACTOR),
           "close": lambda i: swarms.close(fresh(target), actor=ACTOR)}
    calls = [(lambda i=i, op=op: act[op](i), offset)
             for i, (op, offset) in enumerate(zip(ops, (first_offset, second_offset), strict=True))]
    if with_worker:
        calls.append((work_one, worker_offset))

    outcomes = race(*calls)
    note(f"{outcomes=}")

    target = fresh(target)
    members = list(target.members.order_by("position"))
    assert [m.position for m in members] == list(range(len(members))), "positions collide or skip"
    expected = _serial_adds(before, closed, swarm_spec["max_tasks"], list(zip(ops, sizes, strict=True)))
    assert (kinds(outcomes[:2]), len(members)) in expected
    holding = target.members.filter(status__in=HELD).count()
    assert holding <= swarm_spec["max_concurrency"], f"{holding} members hold a slot"
    assert_consistent()
    if not target.config.get("closed"):
        swarms.close(target, actor=ACTOR)
    root = assert_finishes(root)
    target = fresh(target)
    assert target.result == [m.kwargs["value"] for m in members], describe(root)


