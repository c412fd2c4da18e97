"""The graph view's JSON, the timeline, the accessible table and side panel, and the graph editor's
endpoints and saved definitions (Django test client; nothing here needs a worker)."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tasks_app.models import GraphDefinition, Run, RunStatus, Signature, Status
from tasks_app.services import execution, graph_view

pytestmark = pytest.mark.django_db

ROUTED = {
    "kind": "graph", "name": "Route by label",
    "nodes": {
        "classify": {"task": "examples.classify", "kwargs": {"value": 80}},
        "high": {"task": "examples.echo", "kwargs": {"value": "high"}},
        "low": {"task": "examples.echo", "kwargs": {"value": "low"}},
    },
    "edges": [
        {"from": "classify", "to": "high", "when": {"template": "label_is", "params": {"value": "high"}}},
        {"from": "classify", "to": "low", "when": {"path": "label", "op": "eq", "value": "low"}},
    ],
    "on_error": [{"task": "examples.echo", "kwargs": {"value": "alert"}}],
}


def web(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post_json(client: Client, url: str, data) -> object:
    return client.post(url, json.dumps(data), content_type="application/json")


def workflow_with_swarm(owner, members: int) -> Signature:
    spec = {"kind": "chain", "name": f"swarm of {members}", "steps": [
        {"task": "examples.classify", "kwargs": {"value": 1}},
        {"kind": "swarm", "name": "renders", "tasks": [{"task": "examples.noop"} for _ in range(members)]},
    ]}
    return execution.submit(spec, owner=owner, run=False)


def member(graph: Signature, key: str) -> Signature:
    return graph.members.get(node_key=key)


def resolve_routed(graph: Signature) -> None:
    """Test set-up: the state the graph reaches after classify returned "high"."""
    now = timezone.now()
    Signature.objects.filter(pk=graph.pk).update(status=Status.RUNNING, started_at=now,
                                                 config={**graph.config, "edge_states": {"0": True, "1": False}})
    Signature.objects.filter(pk=member(graph, "classify").pk).update(
        status=Status.COMPLETED, started_at=now - timezone.timedelta(seconds=3), finished_at=now,
        result={"label": "high", "value": 80})
    Signature.objects.filter(pk=member(graph, "high").pk).update(status=Status.RUNNING, started_at=now)
    Signature.objects.filter(pk=member(graph, "low").pk).update(status=Status.SKIPPED, finished_at=now)


# The graph's JSON ---------------------------------------------------------------------------------


def test_a_graph_shows_its_nodes_conditional_edges_and_callbacks(owner):
    graph = execution.submit(ROUTED, owner=owner, run=False)
    data = web(owner).get(reverse("task_graph", args=[graph.pk])).json()
    nodes = {n["label"]: n for n in data["nodes"]}
    assert set(nodes) == {"Route by label", "classify: examples.classify", "high: examples.echo",
                          "low: examples.echo", "examples.echo"}
    assert nodes["high: examples.echo"]["parent"] == str(graph.pk)
    assert nodes["examples.echo"]["callback_on"] == "error"
    edges = {e["label"]: e for e in data["edges"]}
    assert edges["label_is value=high"]["kind"] == "conditional"
    assert edges["label eq low"]["state"] is None
    assert edges["on error"]["kind"] == "callback" and edges["on error"]["source"] == str(graph.pk)


def test_resolved_edges_are_taken_or_skipped(owner):
    graph = execution.submit(ROUTED, owner=owner, run=False)
    resolve_routed(graph)
    data = web(owner).get(reverse("task_graph", args=[graph.pk])).json()
    states = {e["label"]: e["state"] for e in data["edges"] if e["kind"] == "conditional"}
    assert states == {"label_is value=high": "taken", "label eq low": "skipped"}
    statuses = {n["label"].split(":")[0]: n["status"] for n in data["nodes"]}
    assert statuses["high"] == "running" and statuses["low"] == "skipped"


def test_a_chain_has_flow_edges_in_order(owner):
    chain = execution.submit({"kind": "chain", "steps": [{"task": "examples.echo"}, {"task": "examples.double"},
                                                         {"task": "examples.double"}]}, owner=owner, run=False)
    data = web(owner).get(reverse("task_graph", args=[chain.pk])).json()
    steps = list(chain.members.order_by("position").values_list("pk", flat=True))
    flow = [(e["source"], e["target"]) for e in data["edges"] if e["kind"] == "flow"]
    assert flow == [(str(steps[0]), str(steps[1])), (str(steps[1]), str(steps[2]))]


@pytest.mark.parametrize("members", [10, 1000])
def test_the_number_of_queries_does_not_grow_with_the_swarm(owner, members, django_assert_max_num_queries):
    sig = workflow_with_swarm(owner, members)
    client = web(owner)
    with django_assert_max_num_queries(6):
        response = client.get(reverse("task_graph", args=[sig.pk]))
    swarm = next(n for n in response.json()["nodes"] if n["kind"] == "swarm")
    assert swarm["total"] == members and swarm["counts"] == {"pending": members}
    assert swarm["open"] is (members <= graph_view.COLLAPSE_OVER)
    assert len(response.json()["nodes"]) == (3 + members if members <= graph_view.COLLAPSE_OVER else 3)


def test_a_large_swarm_expands_page_by_page(owner, django_assert_max_num_queries):
    sig = workflow_with_swarm(owner, 120)
    swarm = sig.members.get(kind="swarm")
    client = web(owner)
    with django_assert_max_num_queries(7):
        data = client.get(reverse("task_graph", args=[sig.pk]), {"expand": swarm.pk, "page": 3}).json()
    shown = [n for n in data["nodes"] if n["parent"] == str(swarm.pk)]
    assert len(shown) == 20
    positions = set(Signature.objects.filter(pk__in=[n["task_id"] for n in shown]).values_list("position", flat=True))
    assert positions == set(range(100, 120))
    swarm_node = next(n for n in data["nodes"] if n["id"] == str(swarm.pk))
    assert (swarm_node["open"], swarm_node["page"], swarm_node["pages"]) == (True, 3, 3)


def test_containers_collapse_and_expand_on_request(owner):
    sig = workflow_with_swarm(owner, 5)
    swarm = sig.members.get(kind="swarm")
    client = web(owner)
    data = client.get(reverse("task_graph", args=[sig.pk]), {"collapse": swarm.pk}).json()
    swarm_node = next(n for n in data["nodes"] if n["id"] == str(swarm.pk))
    assert swarm_node["open"] is False and swarm_node["counts"] == {"pending": 5}
    assert not [n for n in data["nodes"] if n["parent"] == str(swarm.pk)]


def test_a_member_of_a_large_swarm_has_its_own_graph(owner):
    sig = workflow_with_swarm(owner, 60)
    one = sig.members.get(kind="swarm").members.first()
    data = web(owner).get(reverse("task_graph", args=[one.pk])).json()
    assert [n["id"] for n in data["nodes"]] == [str(one.pk)]


def test_graph_pages_are_404_for_other_people(owner, stranger):
    graph = execution.submit(ROUTED, owner=owner, run=False)
    client = web(stranger)
    node = member(graph, "high")
    for url in (reverse("task_graph", args=[graph.pk]), reverse("task_timeline", args=[graph.pk]),
                reverse("task_graph_table", args=[graph.pk]), reverse("task_graph_node", args=[graph.pk, node.pk])):
        assert client.get(url).status_code == 404, url


def test_the_side_panel_belongs_to_the_workflow(owner):
    graph = execution.submit(ROUTED, owner=owner, run=False)
    other = execution.submit({"task": "examples.noop"}, owner=owner, run=False)
    client = web(owner)
    assert client.get(reverse("task_graph_node", args=[graph.pk, other.pk])).status_code == 404
    response = client.get(reverse("task_graph_node", args=[graph.pk, member(graph, "high").pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "high: examples.echo" in html and f"/tasks/{member(graph, 'high').pk}/pause/" in html


def test_the_panel_of_a_large_swarm_offers_its_pages(owner):
    sig = workflow_with_swarm(owner, 120)
    swarm = sig.members.get(kind="swarm")
    html = web(owner).get(reverse("task_graph_node", args=[sig.pk, swarm.pk])).content.decode()
    assert "120 members" in html and "Page 3 of 3" in html and f'data-graph-expand="{swarm.pk}"' in html


def test_the_table_says_which_edges_were_taken(owner):
    graph = execution.submit(ROUTED, owner=owner, run=False)
    resolve_routed(graph)
    html = web(owner).get(reverse("task_graph_table", args=[graph.pk])).content.decode()
    assert "from classify: examples.classify (label_is value=high): taken" in html
    assert "from classify: examples.classify (label eq low): not taken" in html
    assert f'data-node="{member(graph, "low").pk}" data-node-status="skipped"' in html


def test_the_detail_page_holds_the_graph_and_timeline(owner):
    graph = execution.submit(ROUTED, owner=owner, run=False)
    html = web(owner).get(reverse("task_detail", args=[graph.pk])).content.decode()
    assert f'data-graph-url="/tasks/{graph.pk}/graph.json"' in html
    assert f'data-timeline-url="/tasks/{graph.pk}/timeline.json"' in html
    assert "vendor/cytoscape-3.34.4/cytoscape.min.js" in html and "Table of the graph" in html


# Timeline -----------------------------------------------------------------------------------------


def add_run(sig: Signature, start: float, end: float, status: str = RunStatus.COMPLETED) -> None:
    base = timezone.now() - timezone.timedelta(minutes=10)
    at = lambda seconds: base + timezone.timedelta(seconds=seconds)  # noqa: E731
    Run.objects.create(signature=sig, number=sig.runs.count() + 1, status=status, queued_at=at(start - 1),
                       started_at=at(start), finished_at=at(end))
    Signature.objects.filter(pk=sig.pk).update(status=Status.COMPLETED, started_at=at(start), finished_at=at(end))


def test_the_timeline_has_spans_and_the_critical_path(owner, django_assert_max_num_queries):
    graph = execution.submit({"kind": "graph", "nodes": {
        "a": {"task": "examples.noop"}, "fast": {"task": "examples.noop"}, "slow": {"task": "examples.noop"},
        "join": {"task": "examples.noop"}}, "edges": [
        {"from": "a", "to": "fast"}, {"from": "a", "to": "slow"}, {"from": "fast", "to": "join"},
        {"from": "slow", "to": "join"}]}, owner=owner, run=False)
    for key, (start, end) in {"a": (0, 2), "fast": (2, 3), "slow": (2, 30), "join": (30, 31)}.items():
        add_run(member(graph, key), start, end)
    states = {str(i): True for i in range(4)}
    Signature.objects.filter(pk=graph.pk).update(config={**graph.config, "edge_states": states})
    client = web(owner)
    with django_assert_max_num_queries(6):
        data = client.get(reverse("task_timeline", args=[graph.pk])).json()
    rows = {r["label"].split(":")[0]: r for r in data["rows"]}
    assert [s["phase"] for s in rows["slow"]["spans"]] == ["queued", "running"]
    running = rows["slow"]["spans"][1]
    assert running["end"] - running["start"] == 28_000 and running["status"] == "completed"
    assert {k for k, r in rows.items() if r["critical"]} == {"a", "slow", "join"}


def test_a_workflow_not_started_has_rows_without_spans(owner):
    graph = execution.submit(ROUTED, owner=owner, run=False)
    data = web(owner).get(reverse("task_timeline", args=[graph.pk])).json()
    assert len(data["rows"]) == 5 and all(row["spans"] == [] for row in data["rows"])
    assert not any(row["critical"] for row in data["rows"])


# The editor ---------------------------------------------------------------------------------------


def test_validate_accepts_a_good_graph(owner):
    response = post_json(web(owner), reverse("graph_validate"), {"spec": ROUTED})
    assert response.status_code == 200 and response.json() == {"valid": True, "errors": {}}


@pytest.mark.parametrize("change, path, words", [
    (lambda s: s["edges"].append({"from": "high", "to": "classify"}), "edges", "cycle"),
    (lambda s: s["nodes"]["high"].update(task="examples.nope"), "nodes.high.task", "unknown task"),
    (lambda s: s["nodes"].update(sum={"task": "examples.add"}), "nodes.sum.kwargs.a", "required"),
    (lambda s: s["edges"][0].update(when={"template": "threshold", "params": {}}), "edges[0].when.params.path",
     "required"),
    (lambda s: s.update(kind="chain"), "kind", "graph"),
])
def test_validate_names_each_problem(owner, change, path, words):
    spec = json.loads(json.dumps(ROUTED))
    change(spec)
    response = post_json(web(owner), reverse("graph_validate"), {"spec": spec})
    assert response.status_code == 400
    assert words in response.json()["errors"][path]


def test_validate_refuses_what_is_not_json(owner):
    response = web(owner).post(reverse("graph_validate"), "{nope", content_type="application/json")
    assert response.status_code == 400 and "body" in response.json()["errors"]


def test_json_nested_deeper_than_python_can_read_is_refused_not_a_server_error(owner):
    client, deep = web(owner), "[" * 100_000
    response = client.post(reverse("graph_validate"), deep, content_type="application/json")
    assert response.status_code == 400 and "nested too deeply" in response.json()["errors"]["body"]
    html = client.get(reverse("graph_params"), {"task": "examples.add", "kwargs": deep})
    assert html.status_code == 200 and 'name="kw_a"' in html.content.decode()


def test_save_list_edit_run_and_delete_a_definition(owner, stranger):
    client = web(owner)
    response = post_json(client, reverse("graph_new"), {"name": "Routing", "spec": ROUTED})
    assert response.status_code == 200
    definition = GraphDefinition.objects.get(pk=response.json()["id"])
    assert definition.owner == owner and definition.spec == ROUTED
    assert "Routing" in client.get(reverse("graph_definition_list")).content.decode()
    assert "Routing" not in web(stranger).get(reverse("graph_definition_list")).content.decode()

    page = client.get(reverse("graph_edit", args=[definition.pk])).content.decode()
    assert '"label_is"' in page and 'id="graph-editor-data"' in page
    changed = {**ROUTED, "edges": ROUTED["edges"][:1]}
    response = post_json(client, reverse("graph_edit", args=[definition.pk]), {"name": "Routing 2", "spec": changed})
    assert response.status_code == 200
    definition.refresh_from_db()
    assert (definition.name, definition.spec["edges"]) == ("Routing 2", ROUTED["edges"][:1])

    response = client.post(reverse("graph_run", args=[definition.pk]))
    sig = Signature.objects.get(owner=owner, kind="graph")
    assert response.status_code == 302 and response["Location"] == reverse("task_detail", args=[sig.pk])
    assert sig.title == "Route by label" and sig.members.count() == 3

    client.post(reverse("graph_delete", args=[definition.pk]))
    assert not GraphDefinition.objects.filter(pk=definition.pk).exists()


def test_saving_an_invalid_graph_names_the_errors(owner):
    bad = {**ROUTED, "edges": [{"from": "classify", "to": "nowhere"}]}
    response = post_json(web(owner), reverse("graph_new"), {"name": "Broken", "spec": bad})
    assert response.status_code == 400 and "edges[0].to" in response.json()["errors"]
    response = post_json(web(owner), reverse("graph_new"), {"name": " ", "spec": ROUTED})
    assert response.status_code == 400 and "name" in response.json()["errors"]
    assert not GraphDefinition.objects.exists()


def test_definitions_are_404_for_other_people(owner, stranger):
    definition = GraphDefinition.objects.create(owner=owner, name="Mine", spec=ROUTED)
    client = web(stranger)
    assert client.get(reverse("graph_edit", args=[definition.pk])).status_code == 404
    response = post_json(client, reverse("graph_edit", args=[definition.pk]), {"name": "x", "spec": ROUTED})
    assert response.status_code == 404
    assert client.post(reverse("graph_run", args=[definition.pk])).status_code == 404
    assert client.post(reverse("graph_delete", args=[definition.pk])).status_code == 404
    assert GraphDefinition.objects.get(pk=definition.pk).name == "Mine"


def test_a_task_opens_in_the_editor_as_a_copy(owner, stranger):
    graph = execution.submit(ROUTED, owner=owner, run=False)
    page = web(owner).get(reverse("graph_new"), {"from_task": graph.pk})
    data = page.context["editor"]
    assert data["name"] == "Copy of Route by label"
    assert set(data["spec"]["nodes"]) == {"classify", "high", "low"}
    assert data["spec"]["edges"][0]["when"] == {"template": "label_is", "params": {"value": "high"}}
    assert post_json(web(owner), reverse("graph_validate"), {"spec": data["spec"]}).status_code == 200
    assert web(stranger).get(reverse("graph_new"), {"from_task": graph.pk}).status_code == 404


def test_a_nodes_arguments_use_the_execute_pages_form(owner):
    client = web(owner)
    html = client.get(reverse("graph_params"), {"task": "examples.add", "kwargs": json.dumps({"a": 2, "z": 1})})
    text = html.content.decode()
    assert 'name="kw_a"' in text and 'value="2"' in text and "&quot;z&quot;: 1" in text
    ok = client.post(reverse("graph_params"), {"task": "examples.add", "kw_a": "2.5", "kw_b": "", "extra": '{"z": 1}'})
    assert ok.json() == {"kwargs": {"a": 2.5, "z": 1}}
    bad = client.post(reverse("graph_params"), {"task": "examples.add", "kw_a": ""})
    assert bad.status_code == 400 and "kw_a" in bad.json()["errors"]
