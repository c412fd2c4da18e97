"""Save screenshots of the dashboard, a live task detail, the task list, a workflow's graph view and
timeline, and the graph editor under docs/screenshots/.

    .venv/bin/python docs/make_screenshots.py [--phone DIR]

``--phone DIR`` also saves the same pages at a phone's width (390 px) into DIR, for checking.

Everything runs in a throw-away directory: its own SQLite database, an embedded Redis, a burst
worker that runs some history (completions, failures, a chain, a swarm), then daphne and two
workers while the Cellphone Store CRM demo runs; Chromium (Debian's, /usr/bin/chromium) takes the
pictures while it is in step 2. Nothing of the local `make run` data is read or touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
USER, PASSWORD = "demo", "screenshots-only"
HISTORY = [
    *({"task": "examples.echo", "kwargs": {"value": i}, "category": "reports"} for i in range(6)),
    *({"task": "examples.add", "kwargs": {"a": i, "b": 2}, "category": "billing"} for i in range(4)),
    *({"task": "examples.sleep", "kwargs": {"seconds": s, "step": 0.5}, "category": "batch"} for s in (1, 1.5, 2)),
    {"task": "examples.fail", "kwargs": {"message": "payment gateway timed out"}, "name": "Charge cards",
     "category": "billing"},
    {"task": "examples.fail", "kwargs": {"message": "inventory feed returned 502"}, "name": "Import inventory"},
    {"task": "examples.log", "kwargs": {"lines": 25}, "name": "Nightly log rotation", "category": "batch"},
    {"task": "examples.build_crm", "kwargs": {"title": "Warm-up CRM", "seconds_per_item": 0.3}, "name": "Warm-up CRM"},
    {"kind": "chain", "name": "Echo, double, add", "steps": [
        {"task": "examples.echo", "kwargs": {"value": 21}}, {"task": "examples.double"},
        {"task": "examples.add", "kwargs": {"a": 8}}]},
]


def prepare_environment(workdir: Path):
    """Point settings at the throw-away directory and start its Redis (before Django reads settings)."""
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings",
        "ORCHESTRATOR_VAR_DIR": str(workdir),
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "ORCHESTRATOR_LOG_LEVEL": "WARNING",
    })
    sys.path.insert(0, str(ROOT))
    from tasks_app.embedded_redis import EmbeddedRedis

    redis = EmbeddedRedis(workdir / "redis")
    os.environ["REDIS_URL"] = redis.start()
    return redis


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=dict(os.environ), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    """Kill a process and its children (a worker's work horse runs a task in its own process)."""
    import psutil

    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()


def seed(workdir: Path):
    """The demo user and finished history: run by one burst worker until the queues are empty."""
    import django
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user(USER, password=PASSWORD)
    from tasks_app.services import execution

    for spec in HISTORY:
        execution.submit(spec, owner=user)
    spawn(["manage.py", "worker", "--burst"], workdir / "burst.log").wait(timeout=180)
    return user


def start_live_work(user):
    """What is in flight in the pictures: the CRM demo, a swarm, a long sleep, one paused task."""
    from tasks_app.services import deletion, execution

    crm = execution.submit({"task": "examples.build_crm", "name": "Cellphone Store CRM", "category": "demo",
                            "kwargs": {"seconds_per_item": 2.5}, "tags": ["crm", "demo"]}, owner=user)
    sleepers = [{"task": "examples.sleep", "kwargs": {"seconds": 30 + i, "step": 1}} for i in range(8)]
    execution.submit({"kind": "swarm", "name": "Thumbnail renders", "max_concurrency": 2, "category": "batch",
                      "tasks": sleepers}, owner=user)
    execution.submit({"task": "examples.sleep", "name": "Re-index search", "kwargs": {"seconds": 900},
                      "priority": "low", "category": "batch"}, owner=user)
    held = execution.submit({"task": "examples.echo", "name": "Send newsletter", "kwargs": {"value": "hi"}},
                            owner=user, run=False)
    from tasks_app.services import lifecycle

    lifecycle.pause(held, actor=USER)
    trash = execution.submit({"task": "examples.noop", "name": "Old experiment"}, owner=user, run=False)
    deletion.delete(trash, actor=USER)
    return crm


def wait_for(condition, timeout: float = 60, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the demo did not reach the expected state in time")
        time.sleep(interval)


ROUTING = {
    "kind": "graph", "name": "Order routing",
    "nodes": {
        "classify": {"task": "examples.classify", "kwargs": {"value": 72}, "priority": "high"},
        "priority": {"kind": "chain", "name": "Priority fulfilment", "steps": [
            {"task": "examples.sleep", "kwargs": {"seconds": 1.5, "step": 0.5}, "priority": "high"},
            {"task": "examples.sleep", "kwargs": {"seconds": 2.5, "step": 0.5}, "priority": "high"}]},
        "standard": {"task": "examples.echo", "kwargs": {"value": "standard"}, "priority": "high"},
        "renders": {"kind": "swarm", "name": "Image renders", "max_concurrency": 2, "tasks": [
            {"task": "examples.sleep", "kwargs": {"seconds": 0.3, "step": 0.3}, "priority": "high"}
            for _ in range(120)]},
        "notify": {"task": "examples.echo", "kwargs": {"value": "shipped"}, "priority": "high"},
    },
    "edges": [
        {"from": "classify", "to": "priority", "when": {"template": "label_is", "params": {"value": "high"}}},
        {"from": "classify", "to": "standard", "when": {"path": "label", "op": "eq", "value": "low"}},
        {"from": "priority", "to": "renders", "when": {"on": "always"}},
        {"from": "standard", "to": "renders", "when": {"on": "always"}},
        {"from": "renders", "to": "notify"},
    ],
    "on_error": [{"task": "examples.echo", "kwargs": {"value": "page the on-call"}, "name": "Alert on-call",
                  "priority": "high"}],
}


def start_routing(user):
    """A graph in flight for the graph view, the timeline and the editor (on the high queue)."""
    from tasks_app.services import execution

    return execution.submit(ROUTING, owner=user)


def renders_under_way(routing) -> bool:
    swarm = routing.members.filter(node_key="renders").first()
    return swarm is not None and swarm.members.filter(status="completed").count() >= 25


def capture_graphs(page, routing, out: Path, suffix: str = "") -> None:
    wait_for(lambda: renders_under_way(routing), timeout=120)
    page.goto(f"/tasks/{routing.pk}/")
    page.locator("[data-graph][data-graph-ready='true']").wait_for()
    page.locator("[data-timeline][data-timeline-ready='true']").wait_for()
    page.wait_for_timeout(1500)  # live counts land
    renders = routing.members.get(node_key="renders")
    _click(page, f"window.graphView.cy.getElementById('{renders.pk}').renderedPosition()", "[data-graph-canvas]")
    page.locator("[data-graph-panel] .graph-node-panel").wait_for()
    page.wait_for_timeout(300)
    page.locator("#workflow-graph").screenshot(path=str(out / f"graph-view{suffix}.png"))
    page.locator("#workflow-timeline").screenshot(path=str(out / f"timeline{suffix}.png"))
    page.goto(f"/graphs/new/?from_task={routing.pk}")
    page.locator("[data-editor-errors] li.ok").wait_for()
    _click(page, "window.graphEditor.cy.edges()[0].renderedMidpoint()", "[data-editor-canvas]")
    page.locator("[data-condition-mode]").wait_for()
    page.wait_for_timeout(300)
    page.screenshot(path=str(out / f"graph-editor{suffix}.png"), full_page=True)


def _click(page, point_js: str, canvas: str) -> None:
    """Click a Cytoscape element at its rendered position inside its canvas."""
    page.locator(canvas).evaluate("canvas => canvas.scrollIntoView({block: 'center'})")
    # Cytoscape reads the canvas offset again on the scroll event, delivered with the next frames.
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    point = page.evaluate(f"""() => {{
        const p = {point_js};
        const box = document.querySelector('{canvas}').getBoundingClientRect();
        return {{x: box.left + p.x, y: box.top + p.y}};
    }}""")
    page.mouse.click(point["x"], point["y"])


def in_step_two(crm) -> bool:
    step = crm.steps.filter(order=2).first()
    return step is not None and sum(1 for s in step.substeps if s["done"]) >= 2


def capture(page, crm, out: Path, suffix: str = "") -> None:
    page.goto(f"/tasks/{crm.pk}/")
    page.locator("#live-state[data-state='live']").wait_for()
    wait_for(lambda: in_step_two(crm))
    page.wait_for_timeout(1200)  # let the live refresh land
    page.screenshot(path=str(out / f"task-detail{suffix}.png"), full_page=True)
    page.goto("/tasks/")
    page.wait_for_timeout(500)
    page.screenshot(path=str(out / f"task-list{suffix}.png"), full_page=True)
    page.goto("/")
    page.locator("[data-metrics-url][data-loaded='true']").wait_for()
    page.wait_for_timeout(800)  # chart animations
    page.screenshot(path=str(out / f"dashboard{suffix}.png"), full_page=True)


def sign_in(browser, base_url: str, viewport: dict):
    page = browser.new_page(base_url=base_url, viewport=viewport)
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/")
    return page


def shoot(base_url: str, crm, routing, phone_dir: Path | None) -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # the ORM is read beside Playwright's loop
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = sign_in(browser, base_url, {"width": 1280, "height": 900})
        capture(page, crm, OUT)
        capture_graphs(page, routing, OUT)
        if phone_dir is not None:
            phone_dir.mkdir(parents=True, exist_ok=True)
            capture(sign_in(browser, base_url, {"width": 390, "height": 844}), crm, phone_dir, "-phone")
        browser.close()


def main() -> None:
    phone_dir = Path(sys.argv[sys.argv.index("--phone") + 1]) if "--phone" in sys.argv else None
    workdir = Path(tempfile.mkdtemp(prefix="orchestrator-screenshots-"))
    redis = prepare_environment(workdir)
    processes: list[subprocess.Popen] = []
    try:
        user = seed(workdir)
        from tasks_app.embedded_redis import free_port

        port = free_port()
        daphne = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "orchestrator_site.asgi:application"]
        processes.append(spawn(daphne, workdir / "daphne.log"))
        processes += [spawn(["manage.py", "worker"], workdir / f"worker-{i}.log") for i in (1, 2)]
        # The routing graph's own worker: the two above are busy with the long demo tasks.
        processes.append(spawn(["manage.py", "worker", "--queues", "orchestrator-high"], workdir / "worker-high.log"))
        time.sleep(2)
        crm = start_live_work(user)
        routing = start_routing(user)
        shoot(f"http://127.0.0.1:{port}", crm, routing, phone_dir)
        print(f"saved {', '.join(p.name for p in sorted(OUT.glob('*.png')))} in {OUT.relative_to(ROOT)}/")
    finally:
        for process in processes:
            stop(process)
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
