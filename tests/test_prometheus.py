"""``/metrics`` for Prometheus: who may scrape it, and what the exposition says, parsed by the client
library's own parser: signatures, queues, workers, and counters and histograms of every run ever
recorded (read from the database and Redis at scrape time, so every process agrees). Also: every
metric that docs/alerts.yml and docs/grafana-dashboard.json use is in the exposition."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import django_rq
import pytest
import yaml
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rq.utils import utcformat

from tasks_app.models import Run, RunStatus, Signature, WorkerProcess
from tasks_app.services import execution, run_counters
from tests.api_helpers import ECHO, echo, make

pytestmark = pytest.mark.django_db
TOKEN = "scrape-me-0123456789"
DOCS = Path(django_settings.BASE_DIR) / "docs"
OUTCOMES = {"completed", "failed", "paused", "waiting_approval", "interrupted", "lost", "handed_back"}


@pytest.fixture(autouse=True)
def metrics_token(settings, redis_conn) -> None:
    """A bearer token, and an empty test Redis: the run rollup of an earlier test (whose rows were
    rolled back) must not be counted here."""
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "METRICS_TOKEN": TOKEN}


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text(client: Client | None = None, **headers: str) -> str:
    response = (client or Client()).get("/metrics", headers=headers or {"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def samples(exposition: str) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, labels): value}`` of an exposition text."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def scrape(client: Client | None = None, **headers: str) -> dict[tuple[str, frozenset], float]:
    return samples(text(client, **headers))


def families() -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text())}


def labels(**pairs: str) -> frozenset:
    return frozenset(pairs.items())


def run_of(sig, number: int, *, status: str = RunStatus.COMPLETED, seconds: float | None = 1.0, ago: float = 3600,
           waited: float = 0.5, not_before_after: float | None = None) -> Run:
    """A run that ended ``ago`` seconds ago after ``seconds`` of work, queued ``waited`` seconds before it started."""
    ended = timezone.now() - timedelta(seconds=ago)
    started = None if seconds is None else ended - timedelta(seconds=seconds)
    queued = (started or ended) - timedelta(seconds=waited)
    not_before = queued + timedelta(seconds=not_before_after) if not_before_after is not None else None
    return Run.objects.create(signature=sig, number=number, status=status, queued_at=queued, not_before=not_before,
                              started_at=started, finished_at=ended)


# Access ----------------------------------------------------------------------------------------------


def test_the_anonymous_and_a_wrong_token_are_asked_to_authenticate():
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer ünïcode"}):
        response = Client().get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_signed_in_user_who_is_not_staff_is_refused(owner):
    assert signed_in(owner).get("/metrics").status_code == 403


def test_staff_and_the_bearer_token_may_scrape(staff):
    assert scrape(signed_in(staff), Accept="text/plain")
    assert scrape(Authorization=f"Bearer {TOKEN}")


def test_without_a_configured_token_no_bearer_is_accepted(settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "METRICS_TOKEN": ""}
    assert Client().get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401


# Types, names and labels -----------------------------------------------------------------------------


def test_types_names_and_labels_follow_prometheus_conventions(owner):
    run_of(make(owner, ECHO), 1)
    found = families()
    expected = {
        "orchestrator_runs_started": ("counter", {"task"}),
        "orchestrator_runs_finished": ("counter", {"task", "outcome"}),
        "orchestrator_run_duration_seconds": ("histogram", {"task", "le"}),
        "orchestrator_run_queue_wait_seconds": ("histogram", {"task", "le"}),
        "orchestrator_runs_active": ("gauge", {"status"}),
        "orchestrator_queue_jobs": ("gauge", {"queue"}),
        "orchestrator_queue_oldest_job_age_seconds": ("gauge", {"queue"}),
        "orchestrator_workers_alive": ("gauge", set()),
        "orchestrator_workers_lost": ("gauge", set()),
        "orchestrator_workers_registered": ("gauge", set()),
        "orchestrator_signatures": ("gauge", {"kind", "status"}),
        "orchestrator_redis_up": ("gauge", set()),
        "rq_workers": ("gauge", {"name", "state", "queues"}),  # django-rq's collector, merged in
        "rq_jobs": ("gauge", {"queue", "status"}),
    }
    for name, (kind, label_names) in expected.items():
        assert found[name].type == kind, name
        for sample in found[name].samples:
            bucket = sample.name.endswith("_bucket")
            assert set(sample.labels) == (label_names if bucket or kind != "histogram" else label_names - {"le"})
    counter_samples = {s.name for s in found["orchestrator_runs_finished"].samples}
    assert counter_samples == {"orchestrator_runs_finished_total"}
    outcomes = {s.labels["outcome"] for s in found["orchestrator_runs_finished"].samples}
    assert outcomes == OUTCOMES  # every outcome of a task, 0 included, so that ratios exist
    buckets = [s.labels["le"] for s in found["orchestrator_run_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert buckets == [*map(str, run_counters.DURATION_BUCKETS), "+Inf"]


# Gauges of the present -------------------------------------------------------------------------------


def test_signatures_are_counted_by_kind_and_status(owner, stranger):
    make(owner, ECHO)
    make(stranger, ECHO)
    make(owner, {"kind": "chain", "steps": [ECHO, {"task": "examples.double"}]})
    found = scrape()
    assert found[("orchestrator_signatures", labels(kind="task", status="pending"))] == 4
    assert found[("orchestrator_signatures", labels(kind="chain", status="pending"))] == 1
    assert found[("orchestrator_signatures", labels(kind="swarm", status="failed"))] == 0


def test_queue_depth_and_the_age_of_the_oldest_job_per_queue(redis_conn):
    low = django_rq.get_queue("orchestrator-low")
    oldest = low.enqueue("tasks_app.jobs.execute", 1, 1)
    low.enqueue("tasks_app.jobs.execute", 2, 1)
    redis_conn.hset(oldest.key, "enqueued_at", utcformat(timezone.now() - timedelta(seconds=600)))
    found = scrape()
    assert found[("orchestrator_redis_up", frozenset())] == 1
    assert found[("orchestrator_queue_jobs", labels(queue="orchestrator-low"))] == 2
    assert found[("orchestrator_queue_jobs", labels(queue="orchestrator-high"))] == 0
    assert 600 <= found[("orchestrator_queue_oldest_job_age_seconds", labels(queue="orchestrator-low"))] < 660
    assert found[("orchestrator_queue_oldest_job_age_seconds", labels(queue="orchestrator-high"))] == 0
    found = samples(text())
    assert found[("rq_jobs", labels(queue="orchestrator-low", status="queued"))] == 2  # django-rq's view agrees


def test_an_unreachable_redis_is_reported_not_fatal(settings, owner):
    """Redis refusing connections (a port nobody listens on): the database's metrics still come."""
    run_of(make(owner, ECHO), 1)
    nowhere = "redis://127.0.0.1:9/0"
    settings.RQ_QUEUES = {name: {**config, "URL": nowhere} for name, config in settings.RQ_QUEUES.items()}
    found = scrape()
    assert found[("orchestrator_redis_up", frozenset())] == 0
    assert found[("orchestrator_signatures", labels(kind="task", status="pending"))] == 1
    names = {name for name, _ in found}
    assert not names & {"orchestrator_queue_jobs", "orchestrator_runs_started_total"}


def test_workers_alive_and_lost_by_their_heartbeat(settings):
    now = timezone.now()
    stale = now - timedelta(seconds=settings.ORCHESTRATOR["HEARTBEAT_TIMEOUT"] + 5)
    WorkerProcess.objects.create(name="w1", hostname="h", pid=1, last_heartbeat=now)
    WorkerProcess.objects.create(name="w2", hostname="h", pid=2, last_heartbeat=stale)
    WorkerProcess.objects.create(name="w3", hostname="h", pid=3, last_heartbeat=now - timedelta(days=2))
    found = scrape()
    assert found[("orchestrator_workers_alive", frozenset())] == 1
    assert found[("orchestrator_workers_lost", frozenset())] == 1  # lost for a day after its last beat
    assert found[("orchestrator_workers_registered", frozenset())] == 3


def test_active_runs_by_status(owner):
    sig = make(owner, ECHO)
    Run.objects.create(signature=sig, number=1, status=RunStatus.QUEUED)
    Run.objects.create(signature=make(owner, ECHO), number=1, status=RunStatus.RUNNING, started_at=timezone.now())
    run_of(sig, 2)
    found = scrape()
    assert found[("orchestrator_runs_active", labels(status="queued"))] == 1
    assert found[("orchestrator_runs_active", labels(status="running"))] == 1


# Counters and histograms over every run --------------------------------------------------------------


def test_counters_count_every_run_ever_once_however_often_scraped(owner):
    """A run of a month ago counts (no window); two scrapes count nothing twice; a new end adds one."""
    sig = make(owner, ECHO)
    run_of(sig, 1, ago=30 * 86400)
    run_of(sig, 2, status=RunStatus.FAILED, ago=7200)
    run_of(sig, 3, status=RunStatus.LOST, seconds=None, ago=5)  # lost at claim: ended, never started
    echo_ = {"task": "examples.echo"}
    for _ in range(2):
        found = scrape()
        assert found[("orchestrator_runs_started_total", labels(**echo_))] == 2
        assert found[("orchestrator_runs_finished_total", labels(**echo_, outcome="completed"))] == 1
        assert found[("orchestrator_runs_finished_total", labels(**echo_, outcome="failed"))] == 1
        assert found[("orchestrator_runs_finished_total", labels(**echo_, outcome="lost"))] == 1
        assert found[("orchestrator_runs_finished_total", labels(**echo_, outcome="paused"))] == 0
    run_of(sig, 4, ago=1)
    found = scrape()
    assert found[("orchestrator_runs_finished_total", labels(**echo_, outcome="completed"))] == 2
    assert found[("orchestrator_runs_started_total", labels(**echo_))] == 3


def test_runs_before_the_watermark_are_read_once(owner):
    """Once folded into the rollup, an old run is not read again: a scrape reads the recent runs only."""
    sig = make(owner, ECHO)
    old = run_of(sig, 1, ago=7200)
    scrape()
    Run.objects.filter(pk=old.pk).update(status=RunStatus.FAILED)  # not a thing the product does
    found = scrape()
    assert found[("orchestrator_runs_finished_total", labels(task="examples.echo", outcome="completed"))] == 1
    assert found[("orchestrator_runs_finished_total", labels(task="examples.echo", outcome="failed"))] == 0


def test_the_rollup_is_rebuilt_from_the_runs_when_redis_loses_it(owner, redis_conn):
    sig = make(owner, ECHO)
    for number in range(1, 4):
        run_of(sig, number, ago=7200)
    before = scrape()
    redis_conn.flushdb()
    assert scrape() == before


def test_two_scrapes_folding_at_once_count_each_run_once(owner, monkeypatch, redis_conn):
    """Another web server folds the same runs while this scrape is folding them: this scrape's write
    is refused (WATCH) and both answer the same totals; later scrapes too."""
    sig = make(owner, ECHO)
    for number in range(1, 4):
        run_of(sig, number, ago=7200)
    fold, others = run_counters.fold, []

    def fold_while_another_scrapes(rollup, until):
        if not others:
            others.append(None)
            others[0] = run_counters.totals()  # the other server, between this one's WATCH and write
        return fold(rollup, until)

    monkeypatch.setattr(run_counters, "fold", fold_while_another_scrapes)
    earlier = timezone.now() - timedelta(seconds=10)
    mine = run_counters.totals(now=earlier)
    monkeypatch.setattr(run_counters, "fold", fold)
    assert mine.started == others[0].started == {"examples.echo": 3}
    stored = run_counters.Rollup.loads(redis_conn.get(run_counters.key()))
    assert stored.watermark > earlier - run_counters.SETTLE  # the other's fold stands; this one's was refused
    assert run_counters.totals().finished == {"examples.echo": {"completed": 3}}


def test_histograms_of_duration_and_queue_wait(owner):
    sig = make(owner, ECHO)
    run_of(sig, 1, seconds=0.3, waited=0.02, ago=7200)
    run_of(sig, 2, seconds=7, waited=120, not_before_after=100, ago=7200)  # delayed 100 s: waited 20 s once due
    run_of(sig, 3, status=RunStatus.FAILED, seconds=7200, waited=3, ago=5)
    run_of(sig, 4, status=RunStatus.INTERRUPTED, seconds=50, ago=5)  # not a duration of the task's own
    found = scrape()
    task = {"task": "examples.echo"}
    duration = {le: found[("orchestrator_run_duration_seconds_bucket", labels(**task, le=le))]
                for le in ("0.1", "0.5", "5", "10", "3600", "14400", "+Inf")}
    assert duration == {"0.1": 0, "0.5": 1, "5": 1, "10": 2, "3600": 2, "14400": 3, "+Inf": 3}
    assert found[("orchestrator_run_duration_seconds_count", labels(**task))] == 3
    near = {"abs": 1e-3}  # SQLite subtracts times as julian days: to a tenth of a millisecond
    assert found[("orchestrator_run_duration_seconds_sum", labels(**task))] == pytest.approx(7207.3, **near)
    wait = {le: found[("orchestrator_run_queue_wait_seconds_bucket", labels(**task, le=le))]
            for le in ("0.01", "0.05", "1", "5", "30", "+Inf")}
    assert wait == {"0.01": 0, "0.05": 1, "1": 2, "5": 3, "30": 4, "+Inf": 4}
    assert found[("orchestrator_run_queue_wait_seconds_sum", labels(**task))] == pytest.approx(23.52, **near)


def test_task_labels_are_capped_and_keep_their_label(settings, owner):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "METRICS_MAX_TASKS": 2}
    for number, task in enumerate(("examples.echo", "examples.noop"), start=1):
        run_of(make(owner, {"task": task}), number, ago=7200 - number)
    scrape()
    run_of(make(owner, {"task": "examples.double"}), 1, ago=5)
    run_of(make(owner, {"task": "examples.add", "kwargs": {"a": 1}}), 1, ago=5)
    found = scrape()
    started = {dict(key)["task"]: value for (name, key), value in found.items()
               if name == "orchestrator_runs_started_total"}
    assert started == {"examples.echo": 1, "examples.noop": 1, "other": 2}


# Documents: every metric they use exists -------------------------------------------------------------


def metric_names(expression: str) -> set[str]:
    """The orchestrator's and RQ's metric names in a PromQL expression."""
    return set(re.findall(r"\b((?:orchestrator|rq)_[a-zA-Z0-9_]+)", expression))


def document_metrics() -> dict[str, set[str]]:
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text())
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    alerts = {name for group in rules["groups"] for rule in group["rules"] for name in metric_names(rule["expr"])}
    panels = {name for panel in dashboard["panels"] for target in panel.get("targets", [])
              for name in metric_names(target["expr"])}
    return {"docs/alerts.yml": alerts, "docs/grafana-dashboard.json": panels}


def test_every_metric_the_alerts_and_the_dashboard_use_is_exposed(owner):
    run_of(make(owner, ECHO), 1)
    exposed = set()
    for family in text_string_to_metric_families(text()):
        # a family's samples, and the names it would have without samples yet (RQ's without a worker)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        exposed |= {sample.name for sample in family.samples} | {family.name + suffix for suffix in suffixes}
    for document, names in document_metrics().items():
        assert names, document
        assert names <= exposed, (document, names - exposed)


def test_the_metrics_docs_describe_every_orchestrator_metric(owner):
    run_of(make(owner, ECHO), 1)
    described = (DOCS / "metrics.md").read_text()
    for family in text_string_to_metric_families(text()):
        name = family.name + ("_total" if family.type == "counter" else "")
        if name.startswith("orchestrator_"):
            assert f"`{name}`" in described, name


def test_the_alert_rules_cover_a_lost_worker_queue_age_and_the_failure_ratio():
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text())
    by_name = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    exprs = " ".join(rule["expr"] for rule in by_name.values())
    for needed in ("orchestrator_workers_lost", "orchestrator_queue_oldest_job_age_seconds",
                   'outcome="failed"'):
        assert needed in exprs
    for rule in by_name.values():
        assert {"expr", "labels", "annotations"} <= rule.keys()
        assert rule["labels"]["severity"] in {"warning", "critical"}


def test_the_dashboard_is_an_importable_grafana_dashboard():
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert panel["targets"] and all(target["expr"].strip() for target in panel["targets"])


# End to end: a real worker moves the counters ------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_counters_move_when_a_real_worker_starts_and_ends_runs(owner, workers):
    before = scrape()
    ok = execution.submit(echo(1), owner=owner)
    bad = execution.submit({"task": "examples.fail", "kwargs": {"message": "no"}}, owner=owner)
    queued = scrape()
    assert queued[("orchestrator_runs_active", labels(status="queued"))] == 2
    assert queued[("orchestrator_queue_jobs", labels(queue="orchestrator-medium"))] == 2
    workers.burst()
    assert Signature.objects.get(pk=ok.pk).status == "completed"
    assert Signature.objects.get(pk=bad.pk).status == "failed"
    after = scrape()

    def moved(name: str, **pairs: str) -> float:
        key = (name, labels(**pairs))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("orchestrator_runs_started_total", task="examples.echo") == 1
    assert moved("orchestrator_runs_started_total", task="examples.fail") == 1
    assert moved("orchestrator_runs_finished_total", task="examples.echo", outcome="completed") == 1
    assert moved("orchestrator_runs_finished_total", task="examples.fail", outcome="failed") == 1
    assert moved("orchestrator_run_duration_seconds_count", task="examples.echo") == 1
    assert moved("orchestrator_run_queue_wait_seconds_count", task="examples.fail") == 1
    assert after[("orchestrator_runs_active", labels(status="queued"))] == 0
    assert after[("orchestrator_queue_jobs", labels(queue="orchestrator-medium"))] == 0
