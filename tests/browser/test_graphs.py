"""The graph view, timeline and visual editor in a real browser, against daphne and real workers."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from tasks_app.models import GraphDefinition, Signature, Status
from tasks_app.services import execution, live

from .conftest import off_the_loop

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def add_task_node(page, task: str, key: str, value: str | None = None) -> None:
    page.get_by_label("Task", exact=True).select_option(task)
    page.get_by_label("Node name").fill(key)
    page.get_by_role("button", name="Add node").click()
    inspector = page.locator("[data-editor-inspector]")
    expect(inspector.get_by_role("heading", name=f"Node {key}")).to_be_visible()
    if value is not None:
        inspector.get_by_label("value").fill(value)
        inspector.get_by_role("button", name="Apply arguments").click()
        expect(inspector.locator("[data-params-status]")).to_have_text("✓ Applied.")


def connect(page, source: str, target: str, label: str) -> None:
    page.get_by_label("From", exact=True).select_option(source)
    page.get_by_label("To", exact=True).select_option(target)
    page.get_by_role("button", name="Add edge").click()
    inspector = page.locator("[data-editor-inspector]")
    inspector.get_by_label("Taken when").select_option("template")
    inspector.get_by_label("Template").select_option("label_is")
    inspector.get_by_label("value (required)").fill(label)
    inspector.get_by_role("button", name="Apply condition").click()
    expect(inspector.locator("[data-condition-status]")).to_have_text(f"✓ Applied: label_is value={label}")


def problems(page):
    return page.locator("[data-editor-errors]")


def cy(page, expression: str):
    return page.evaluate(f"() => {{ const cy = window.graphView.cy; return {expression}; }}")


def test_build_a_conditional_graph_run_it_and_watch_the_taken_path(owner_page, owner, workers):
    page = owner_page
    workers.start(1)
    page.get_by_role("link", name="Graphs").click()
    page.get_by_role("link", name="New graph").click()
    expect(page).to_have_url(re.compile(r"/graphs/new/$"))
    page.locator("main[data-editor-ready='true']").wait_for()
    page.get_by_label("Name", exact=True).fill("Route by label")
    add_task_node(page, "examples.classify", "classify", "80")
    add_task_node(page, "examples.echo", "high", "high")
    add_task_node(page, "examples.echo", "low", "low")
    connect(page, "classify", "high", "high")
    connect(page, "classify", "low", "low")
    expect(problems(page)).to_contain_text("No problems")

    page.get_by_label("From", exact=True).select_option("high")
    page.get_by_label("To", exact=True).select_option("classify")
    page.get_by_role("button", name="Add edge").click()
    expect(page.locator("[data-editor-hint]")).to_contain_text("would make a cycle")
    add_task_node(page, "examples.add", "sum")
    expect(problems(page)).to_contain_text("nodes.sum.kwargs.a: this argument is required")
    expect(page.locator("[data-editor-save]")).to_have_attribute("data-valid", "false")
    page.locator("[data-editor-inspector]").get_by_role("button", name="Remove node").click()
    expect(problems(page)).to_contain_text("No problems")

    expect(page.get_by_label("Name", exact=True)).to_have_value("Route by label")
    expect(page.locator("[data-editor-save]")).to_have_attribute("data-valid", "true")
    page.get_by_role("button", name="Save and run").click()
    expect(page).to_have_url(re.compile(r"/tasks/\d+/$"), timeout=45_000)
    definition = GraphDefinition.objects.get(owner=owner)
    assert definition.name == "Route by label" and set(definition.spec["nodes"]) == {"classify", "high", "low"}
    graph = Signature.objects.get(owner=owner, kind="graph")
    high, low = graph.members.get(node_key="high"), graph.members.get(node_key="low")
    page.locator("[data-graph][data-graph-ready='true']").wait_for()

    page.wait_for_function(f"""() => {{
        const cy = window.graphView.cy;
        return cy.getElementById('{high.pk}').hasClass('status-completed') && cy.edges('.edge-skipped').length === 1;
    }}""", timeout=30_000)
    taken = cy(page, "cy.edges('.edge-taken').map(e => [e.target().id(), e.data('state'), e.data('label')])")
    skipped = cy(page, "cy.edges('.edge-skipped').map(e => [e.target().id(), e.data('state'), e.data('label')])")
    assert taken == [[str(high.pk), "taken", "label_is value=high"]]
    assert skipped == [[str(low.pk), "skipped", "label_is value=low"]]
    assert cy(page, f"cy.getElementById('{low.pk}').classes()").count("status-skipped") == 1
    colour = cy(page, "cy.edges('.edge-taken')[0].style('line-color')")
    assert colour == "rgb(46,139,87)"  # --status-completed, the green of completed work

    table = page.locator("#graph-table")
    expect(table.locator(f"tr[data-node='{low.pk}']")).to_have_attribute("data-node-status", "skipped")
    expect(table.locator(f"tr[data-node='{high.pk}']")).to_have_attribute("data-node-status", "completed")
    expect(table.locator(f"tr[data-node='{high.pk}']")).to_contain_text("(label_is value=high): taken")
    expect(table.locator(f"tr[data-node='{low.pk}']")).to_contain_text("(label_is value=low): not taken")
    page.locator("[data-timeline][data-timeline-ready='true']").wait_for()
    assert page.evaluate("window.timelineView.chart.data.labels.length") == 4

    page.get_by_role("link", name="Open in editor").click()
    page.locator("main[data-editor-ready='true']").wait_for()
    expect(page.get_by_label("Name", exact=True)).to_have_value("Copy of Route by label")
    expect(problems(page)).to_contain_text("No problems")
    assert page.evaluate("window.graphEditor.cy.nodes().map(n => n.id()).sort()") == ["classify", "high", "low"]
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("[data-editor-saved]")).to_contain_text("Saved “Copy of Route by label”")
    copy = GraphDefinition.objects.exclude(pk=definition.pk).get(owner=owner)
    assert copy.spec["edges"][0]["when"] == {"template": "label_is", "params": {"value": "high"}}
    expect(page).to_have_url(re.compile(rf"/graphs/{copy.pk}/edit/$"))


def big_workflow(owner, members: int) -> Signature:
    spec = {"kind": "chain", "name": f"{members:,} renders", "steps": [
        {"task": "examples.classify", "kwargs": {"value": 70}},
        {"kind": "swarm", "name": "Thumbnail renders", "max_concurrency": 50,
         "tasks": [{"task": "examples.noop"} for _ in range(members)]},
    ]}
    return execution.submit(spec, owner=owner, run=False)


def finish_members(swarm: Signature, count: int) -> None:
    """Test set-up: members end as a worker would report them, one status message each."""
    ids = list(swarm.members.order_by("position").values_list("pk", flat=True)[:count])
    Signature.objects.filter(pk__in=ids).update(status=Status.COMPLETED)
    for sig in Signature.objects.filter(pk__in=ids).only("pk", "owner_id", "parent_id", "callback_of_id"):
        live.publish(sig, "status", status=Status.COMPLETED)


def click_node(page, node_id: str) -> None:
    page.locator("[data-graph-canvas]").evaluate("canvas => canvas.scrollIntoView({block: 'center'})")
    # Cytoscape reads the canvas offset again on the scroll event, delivered with the next frames.
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    point = page.evaluate(f"""() => {{
        const pos = window.graphView.cy.getElementById('{node_id}').renderedPosition();
        const box = document.querySelector('[data-graph-canvas]').getBoundingClientRect();
        return {{x: box.left + pos.x, y: box.top + pos.y}};
    }}""")
    page.mouse.click(point["x"], point["y"])


def test_a_workflow_with_a_10000_member_swarm_opens_fast_and_stays_responsive(owner_page, owner):
    page = owner_page
    sig = off_the_loop(big_workflow, owner, 10_000)
    swarm = sig.members.get(kind="swarm")

    started = time.monotonic()
    page.goto(f"/tasks/{sig.pk}/")
    page.locator("[data-graph][data-graph-ready='true']").wait_for(timeout=30_000)
    first_render = time.monotonic() - started
    heap = page.evaluate("performance.memory.usedJSHeapSize") / 2**20
    script_ms = page.locator("[data-graph]").get_attribute("data-render-ms")
    print(f"\n10,000-member swarm: first render of the graph {first_render:.2f} s after navigation "
          f"(script to drawn: {script_ms} ms); JS heap {heap:.1f} MiB")
    assert first_render < 10
    assert cy(page, f"cy.getElementById('{swarm.pk}').data('total')") == 10_000
    assert cy(page, f"cy.getElementById('{swarm.pk}').hasClass('collapsed')") is True
    assert cy(page, "cy.nodes().length") == 3

    # Live messages are Redis pub/sub: published before the page's socket subscribed, they are gone
    # (the snapshot sent on connect covers that in real use). 1,000 go out in well under a second.
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live", timeout=30_000)
    off_the_loop(finish_members, swarm, 1000)
    probe = time.monotonic()
    assert page.evaluate("1 + 1") == 2
    print(f"round trip to the page during 1,000 status messages: {(time.monotonic() - probe) * 1000:.0f} ms")
    counts = f"window.graphView.cy.getElementById('{swarm.pk}').data('counts')"
    try:
        page.wait_for_function(f"{counts}.completed === 1000", timeout=60_000)
    except PlaywrightTimeoutError:
        state = page.evaluate(f"[{counts}, document.querySelector('[data-graph-status]').textContent]")
        raise AssertionError(f"the collapsed swarm's counts and the graph's status line: {state}") from None
    # The table re-fetches its partial at most every 2 s, the last message's refresh always sent.
    expect(page.locator("#graph-table")).to_contain_text("1000 completed", timeout=30_000)

    before = cy(page, "cy.zoom()")
    page.get_by_role("button", name="Zoom in").first.click()
    assert cy(page, "cy.zoom()") > before
    click_node(page, str(swarm.pk))
    panel = page.locator("[data-graph-panel]")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("10000 members")
    panel.get_by_label("Page of members").select_option("2")
    panel.get_by_role("button", name="Show page").click()
    page.wait_for_function(f"window.graphView.cy.getElementById('{swarm.pk}').children().length === 50")
    positions = set(Signature.objects.filter(
        pk__in=[int(i) for i in cy(page, f"cy.getElementById('{swarm.pk}').children().map(n => n.id())")]
    ).values_list("position", flat=True))
    assert positions == set(range(50, 100))
    heap = page.evaluate("performance.memory.usedJSHeapSize") / 2**20
    print(f"JS heap with a page of members open: {heap:.1f} MiB")


def test_click_a_node_to_see_its_panel_and_control_it(owner_page, owner):
    page = owner_page
    chain = off_the_loop(execution.submit, {"kind": "chain", "name": "Three steps", "steps": [
        {"task": "examples.echo", "kwargs": {"value": 1}}, {"task": "examples.double"}, {"task": "examples.double"}]},
        owner=owner, run=False)
    first = chain.members.order_by("position").first()
    page.goto(f"/tasks/{chain.pk}/")
    page.locator("[data-graph][data-graph-ready='true']").wait_for()
    assert cy(page, "cy.edges('.edge-flow').length") == 2
    click_node(page, str(first.pk))
    panel = page.locator("[data-graph-panel]")
    expect(panel.get_by_role("heading", name="examples.echo")).to_be_visible()
    expect(panel.get_by_role("link", name=f"Open #{first.pk}’s page")).to_be_visible()
    panel.get_by_role("button", name="Pause").click()
    expect(page.locator("#messages")).to_contain_text(f"#{first.pk} examples.echo: paused.")
    expect(panel.locator(f"[data-status-task='{first.pk}']")).to_contain_text("paused")
    page.wait_for_function(f"window.graphView.cy.getElementById('{first.pk}').hasClass('status-paused')")
