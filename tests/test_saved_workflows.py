"""Saved workflows: named, versioned specs used as a node of any spec, ``{"workflow": NAME, "kwargs": {...}}``.

Saving (``POST/GET /api/workflows/``), resolving at submit (kwargs, versions, errors naming the
field, self-reference), the version each run records, the canvas and the CLI; end to end on real
workers, a saved workflow used twice inside another runs both copies.
"""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tasks_app.canvas import chain, sign, swarm, workflow
from tasks_app.models import SavedWorkflow, Signature, Status
from tasks_app.services import graph_definitions
from tasks_app.services.errors import SpecError
from tests.drain import drain

ADD_THEN_DOUBLE = {"kind": "chain", "steps": [{"task": "examples.add"}, {"task": "examples.double"}]}


def save(client, name: str, spec: dict, **extra):
    response = client.post("/api/workflows/", {"name": name, "spec": spec, **extra}, format="json")
    assert response.status_code in (200, 201), response.json()
    return response


def submit(client, spec: dict) -> Signature:
    response = client.post("/api/tasks/", spec, format="json")
    assert response.status_code == 201, response.json()
    return Signature.objects.get(pk=response.json()["id"])


def refused(client, url: str, body: dict) -> dict:
    response = client.post(url, body, format="json")
    assert response.status_code == 400, response.json()
    return response.json()["errors"]


def detail(client, sig: Signature) -> dict:
    return client.get(f"/api/tasks/{sig.pk}/").json()


# Saving -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_saving_a_name_again_adds_a_version_and_the_same_spec_adds_none(owner_client):
    first = save(owner_client, "add-double", ADD_THEN_DOUBLE, description="adds, then doubles")
    assert first.status_code == 201 and (first.json()["version"], first.json()["kind"]) == (1, "chain")
    assert save(owner_client, "add-double", ADD_THEN_DOUBLE, description="adds, then doubles").status_code == 200
    graph = {"kind": "graph", "nodes": {"a": {"task": "examples.add"}}, "edges": []}
    second = save(owner_client, "add-double", graph)
    assert second.status_code == 201 and (second.json()["version"], second.json()["kind"]) == (2, "graph")
    listed = owner_client.get("/api/workflows/").json()["results"]
    assert [(w["name"], w["version"], w["versions"]) for w in listed] == [("add-double", 2, 2)]
    old = owner_client.get("/api/workflows/add-double/?version=1").json()
    assert (old["spec"], old["description"]) == (ADD_THEN_DOUBLE, "adds, then doubles")
    assert [v["version"] for v in old["versions"]] == [2, 1]
    assert owner_client.get("/api/workflows/add-double/?version=3").status_code == 404
    assert owner_client.get("/api/workflows/add-double/?version=x").status_code == 400


@pytest.mark.django_db
def test_saved_workflows_are_their_owners_own(owner_client, stranger_client):
    save(owner_client, "mine", {"task": "examples.noop"})
    assert stranger_client.get("/api/workflows/").json()["results"] == []
    assert stranger_client.get("/api/workflows/mine/").status_code == 404
    assert stranger_client.delete("/api/workflows/mine/").status_code == 404
    errors = refused(stranger_client, "/api/tasks/", {"workflow": "mine"})
    assert errors == {"workflow": "no saved workflow named 'mine'"}
    assert owner_client.delete("/api/workflows/mine/").status_code == 204
    assert owner_client.get("/api/workflows/mine/").status_code == 404


@pytest.mark.django_db
def test_saving_refuses_bad_input_naming_the_field(owner_client):
    assert "name" in refused(owner_client, "/api/workflows/", {"name": "no spaces", "spec": {"task": "examples.noop"}})
    assert "name" in refused(owner_client, "/api/workflows/", {"name": 7, "spec": {"task": "examples.noop"}})
    assert "spec" in refused(owner_client, "/api/workflows/", {"name": "x"})
    assert "colour" in refused(owner_client, "/api/workflows/", {"name": "x", "spec": {}, "colour": "red"})
    errors = refused(owner_client, "/api/workflows/", {"name": "x", "spec": {"kind": "chain", "steps": [
        {"task": "examples.add"}, {"task": "examples.nope"}]}})
    assert errors == {"spec.steps[1].task": "unknown task 'examples.nope'"}  # add's missing `a` waits for a reference
    errors = refused(owner_client, "/api/workflows/", {"name": "x", "spec": {"task": "examples.add",
                                                                               "kwargs": {"z": 1}}})
    assert list(errors) == ["spec.kwargs.z"]
    assert not SavedWorkflow.objects.exists()


@pytest.mark.django_db
def test_a_workflow_cannot_contain_itself_directly_or_through_another(owner_client):
    errors = refused(owner_client, "/api/workflows/", {"name": "loop", "spec": {
        "kind": "chain", "steps": [{"task": "examples.noop"}, {"workflow": "loop"}]}})
    assert errors == {"spec.steps[1].workflow": "a workflow cannot contain itself: loop → loop"}
    save(owner_client, "inner", {"task": "examples.noop"})
    save(owner_client, "outer", {"kind": "swarm", "tasks": [{"workflow": "inner"}]})
    errors = refused(owner_client, "/api/workflows/", {"name": "inner", "spec": {
        "kind": "graph", "nodes": {"a": {"workflow": "outer"}}, "edges": []}})
    assert errors == {"spec.nodes.a.tasks[0].workflow": "a workflow cannot contain itself: inner → outer → inner"}
    assert SavedWorkflow.objects.get(name="inner").version == 1  # nothing saved


# Resolving at submit ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_reference_passes_its_kwargs_to_every_member_that_accepts_them(owner_client):
    save(owner_client, "add-double", {**ADD_THEN_DOUBLE, "kwargs": {"b": 100}})
    flow = submit(owner_client, {"kind": "chain", "steps": [
        {"workflow": "add-double", "kwargs": {"a": 1}},  # 1 + 100, doubled
        {"workflow": "add-double", "kwargs": {"a": 2, "b": 0}, "name": "second copy"},  # (2 + 0 + 202) * 2
    ]})
    drain()
    flow.refresh_from_db()
    first, second = flow.members.order_by("position")
    assert (first.result, second.result, flow.result) == (202, 408, 408)
    assert [m.kwargs for m in first.members.order_by("position")] == [{"a": 1, "b": 100}, {}]  # double takes no a/b
    assert (first.name, second.name) == ("add-double", "second copy")


@pytest.mark.django_db
def test_errors_inside_a_reference_are_named_by_their_path_through_it(owner_client):
    save(owner_client, "add-double", ADD_THEN_DOUBLE)
    errors = refused(owner_client, "/api/tasks/", {"kind": "swarm", "tasks": [
        {"workflow": "add-double", "kwargs": {"a": 1}}, {"workflow": "add-double"}, {"workflow": "missing"},
        {"workflow": "add-double", "version": 9, "kwargs": {"a": 1}}, {"workflow": "add-double", "kind": "chain"},
        {"workflow": ["not", "a", "name"]}]})
    assert errors["tasks[1].steps[0].kwargs.a"] == "this argument is required"
    assert errors["tasks[2].workflow"] == "no saved workflow named 'missing'"
    assert errors["tasks[3].workflow"] == "no saved workflow named 'add-double' has a version 9"
    assert errors["tasks[4].kind"] == "unknown field for a workflow reference"
    assert "tasks[5].workflow" in errors and "tasks[0].steps[0].kwargs.a" not in errors
    assert not Signature.objects.exists()


@pytest.mark.django_db
def test_references_may_not_expand_past_the_size_a_written_out_spec_may_have(owner_client, settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "MAX_SPEC_BYTES": 1000}
    save(owner_client, "leaf", {"task": "examples.echo", "kwargs": {"value": "x" * 100}})
    save(owner_client, "pair", {"kind": "chain", "steps": [{"workflow": "leaf"}, {"workflow": "leaf"}]})
    assert submit(owner_client, {"kind": "swarm", "tasks": [{"workflow": "pair"}] * 2}).members.count() == 2
    many = {"kind": "swarm", "tasks": [{"workflow": "pair"}] * 8}  # 60 bytes that would expand to 3 KB
    response = owner_client.post("/api/tasks/", many, format="json")
    assert response.status_code == 413 and "ORCHESTRATOR_MAX_SPEC_BYTES" in response.json()["detail"]
    group = submit(owner_client, {"kind": "swarm", "closed": False, "tasks": []})
    added = owner_client.post(f"/api/tasks/{group.pk}/tasks", {"tasks": many["tasks"]}, format="json")
    assert added.status_code == 413 and group.members.count() == 0


@pytest.mark.django_db
def test_each_run_records_the_version_it_was_built_from(owner_client):
    save(owner_client, "greet", {"task": "examples.echo", "kwargs": {"value": "v1"}})
    old = submit(owner_client, {"workflow": "greet"})
    save(owner_client, "greet", {"task": "examples.echo", "kwargs": {"value": "v2"}})
    new = submit(owner_client, {"workflow": "greet"})
    pinned = submit(owner_client, {"workflow": "greet", "version": 1, "on_success": [{"task": "examples.double"}]})
    plain = submit(owner_client, {"task": "examples.echo", "kwargs": {"value": 0}})
    drain()
    assert detail(owner_client, old)["workflow"] == {"name": "greet", "version": 1}
    assert detail(owner_client, new)["workflow"] == {"name": "greet", "version": 2}
    assert detail(owner_client, pinned)["workflow"] == {"name": "greet", "version": 1}
    assert detail(owner_client, plain)["workflow"] is None
    assert [Signature.objects.get(pk=s.pk).result for s in (old, new, pinned)] == ["v1", "v2", "v1"]
    assert pinned.callbacks.get().result == "v1v1"  # the reference's callbacks are added to the saved ones
    owner_client.delete("/api/workflows/greet/")
    assert detail(owner_client, old)["workflow"] == {"name": "greet", "version": 1}  # kept after the delete


@pytest.mark.django_db
def test_swarm_bulk_add_and_the_graph_editor_resolve_references(owner, owner_client):
    save(owner_client, "echo-it", {"task": "examples.echo"})
    group = submit(owner_client, {"kind": "swarm", "closed": False, "tasks": []})
    members = [{"workflow": "echo-it", "kwargs": {"value": v}} for v in (1, 2)]
    added = owner_client.post(f"/api/tasks/{group.pk}/tasks", {"tasks": members}, format="json")
    assert added.status_code == 201, added.json()
    bad = owner_client.post(f"/api/tasks/{group.pk}/tasks", {"tasks": [{"workflow": "nope"}]}, format="json")
    assert bad.status_code == 400 and "tasks[0].workflow" in bad.json()["errors"]
    owner_client.post(f"/api/tasks/{group.pk}/close")
    drain()
    group.refresh_from_db()
    assert (group.status, group.result) == (Status.COMPLETED, [1, 2])
    graph = {"kind": "graph", "nodes": {"a": {"workflow": "echo-it", "kwargs": {"value": 3}}}, "edges": []}
    assert graph_definitions.check(graph, owner)["nodes"]["a"]["saved_workflow"] == {"name": "echo-it", "version": 1}
    with pytest.raises(SpecError) as missing:
        graph_definitions.check({**graph, "nodes": {"a": {"workflow": "nope"}}}, owner)
    assert list(missing.value.errors) == ["nodes.a.workflow"]


@pytest.mark.django_db
def test_the_canvas_saves_and_uses_workflows_by_name(owner):
    saved = chain([sign("examples.add"), sign("examples.double")]).save_as("add-double", owner=owner)
    assert (saved.name, saved.version) == ("add-double", 1)
    handle = swarm([workflow("add-double", a=1), workflow("add-double", version=1, a=2, b=3)]).run(owner=owner)
    drain()
    assert handle.refresh().signature.result == [2, 10]
    with pytest.raises(SpecError) as unknown:
        workflow("nope").run(owner=owner)
    assert unknown.value.errors == {"workflow": "no saved workflow named 'nope'"}


@pytest.mark.django_db
def test_the_cli_submits_a_saved_workflow_by_name_and_in_a_spec_file(owner_client, tmp_path, django_user_model):
    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    save(owner_client, "add-double", ADD_THEN_DOUBLE)
    spec_file = tmp_path / "flow.json"
    spec_file.write_text(json.dumps({"kind": "swarm", "tasks": [{"workflow": "add-double", "kwargs": {"a": 4}}]}))
    out = io.StringIO()
    call_command("submit", "--workflow", "add-double", "--kwargs", '{"a": 5}', "--owner", "owner", stdout=out)
    call_command("submit", "--spec", str(spec_file), "--owner", "owner", stdout=out)
    drain()
    by_name, from_file = Signature.objects.filter(parent=None).order_by("pk")
    assert (by_name.result, from_file.result) == (10, [8])
    with pytest.raises(CommandError) as unknown:
        call_command("submit", "--workflow", "add-double", stdout=out)  # the superuser has no such workflow
    assert "workflow: no saved workflow named 'add-double'" in str(unknown.value)


# End to end ---------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_saved_workflow_used_twice_inside_another_runs_both_copies_on_real_workers(owner_client, workers):
    save(owner_client, "add-double", ADD_THEN_DOUBLE)
    save(owner_client, "fan", {"kind": "graph", "nodes": {
        "left": {"workflow": "add-double", "kwargs": {"a": 1}},
        "right": {"workflow": "add-double", "kwargs": {"a": 10}},
        "join": {"task": "examples.echo"}},
        "edges": [{"from": "left", "to": "join"}, {"from": "right", "to": "join"}]})
    save(owner_client, "add-double", {**ADD_THEN_DOUBLE, "kwargs": {"b": 1}})  # version 2, used from now on
    top = submit(owner_client, {"workflow": "fan", "on_finish": [{"task": "examples.noop"}]})
    workers.burst()
    top.refresh_from_db()
    assert top.status == Status.COMPLETED, top.error
    assert (top.result["left"], top.result["right"]) == (4, 22)  # (1 + 1) * 2, (10 + 1) * 2
    copies = {m.node_key: m for m in top.members.exclude(node_key="join")}
    assert {key: detail(owner_client, m)["workflow"] for key, m in copies.items()} == {
        "left": {"name": "add-double", "version": 2}, "right": {"name": "add-double", "version": 2}}
    assert detail(owner_client, top)["workflow"] == {"name": "fan", "version": 1}
    for copy in copies.values():  # two copies, each with its own members, each run once
        assert [(s.status, s.runs.count()) for s in copy.members.order_by("position")] == [(Status.COMPLETED, 1)] * 2
    assert top.callbacks.get().runs.count() == 1
