"""Property-based: pause and cancel reach every descendant of any nested workflow."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks_app.models import Kind, Run, RunStatus, Signature, Status
from tasks_app.services import execution, lifecycle
from tests.drain import drain, step

pytestmark = pytest.mark.django_db

leaf = st.sampled_from([{"task": "examples.noop"}, {"task": "examples.echo", "kwargs": {"value": 1}}])


def _graph(nodes: list[dict]) -> dict:
    names = [f"n{i}" for i in range(len(nodes))]
    return {"kind": "graph", "nodes": dict(zip(names, nodes)),
            "edges": [{"from": a, "to": b} for a, b in zip(names, names[1:])]}


workflows = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.lists(children, min_size=2, max_size=3).map(lambda s: {"kind": "chain", "steps": s}),
        st.builds(lambda tasks, limit: {"kind": "swarm", "tasks": tasks, "max_concurrency": limit},
                  st.lists(children, min_size=1, max_size=3), st.integers(1, 2)),
        st.lists(children, min_size=1, max_size=3).map(_graph),
    ),
    max_leaves=8,
)
examples = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def leaves(root: Signature):
    return Signature.objects.tree(root.pk).filter(kind=Kind.TASK)


@examples
@given(workflows, st.integers(0, 6))
def test_pause_holds_everything_and_resume_runs_each_task_once(owner, spec, progress):
    Signature.objects.all().delete()
    root = execution.submit(spec, owner=owner)
    step(progress)
    root.refresh_from_db()
    if root.status != Status.COMPLETED:
        lifecycle.pause(root, actor="t")
        assert not Signature.objects.tree(root.pk).filter(status__in=[Status.QUEUED, Status.RUNNING]).exists()
        assert drain() == []
        lifecycle.resume(Signature.objects.get(pk=root.pk), actor="t")
    drain()
    root.refresh_from_db()
    assert root.status == Status.COMPLETED
    for task in leaves(root):
        assert task.runs.filter(status=RunStatus.COMPLETED).count() == (1 if task.status == Status.COMPLETED else 0)


@examples
@given(workflows, st.integers(0, 6))
def test_cancel_deletes_the_whole_tree_and_nothing_runs_after(owner, spec, progress):
    Signature.objects.all().delete()
    root = execution.submit(spec, owner=owner)
    step(progress)
    lifecycle.cancel(Signature.objects.get(pk=root.pk), confirm=True, actor="t")
    assert drain() == []
    assert not Signature.objects.exists() and not Run.objects.exists()
