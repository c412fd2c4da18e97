"""The management commands: submit, status, logs, control, purge_deleted, resume_unfinished."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import django_rq
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from django.utils import timezone

from tasks_app import cli
from tasks_app.management.commands import submit
from tasks_app.models import Event, Kind, LogEntry, Priority, Signature, Status, Step, StepStatus
from tasks_app.services import deletion, execution, progress
from tests.drain import drain

CRM = "examples.build_crm"
pytestmark = pytest.mark.django_db


def run(*args: str, **options) -> tuple[str, str]:
    """call_command with captured output; returns (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def refused(*args: str, **options) -> CommandError:
    with pytest.raises(CommandError) as caught:
        run(*args, **options)
    return caught.value


def pending(owner, spec: dict | None = None) -> Signature:
    return execution.submit(spec or {"task": "examples.echo", "kwargs": {"value": 1}}, owner=owner, run=False)


def crm_in_step_two(owner) -> Signature:
    """A CRM task drawn mid-way: step 1 done, step 2 running with two of four substeps done."""
    sig = pending(owner, {"task": CRM, "name": "Cellphone Store CRM"})
    now = timezone.now()
    substeps = [
        {"name": n, "done": i < 2}
        for i, n in enumerate(["Customer list view", "Product list view", "Sales form", "Repair board"])
    ]
    Step.objects.bulk_create(
        [
            Step(
                signature=sig,
                order=1,
                name="Create database tables",
                status=StepStatus.COMPLETED,
                progress=100,
                started_at=now - timezone.timedelta(seconds=70),
                finished_at=now - timezone.timedelta(seconds=60),
            ),
            Step(
                signature=sig,
                order=2,
                name="Generate application UI",
                status=StepStatus.RUNNING,
                progress=50,
                substeps=substeps,
                started_at=now - timezone.timedelta(seconds=60),
            ),
            Step(signature=sig, order=3, name="Add search and filters"),
            Step(signature=sig, order=4, name="Configure workflows"),
        ]
    )
    Signature.objects.filter(pk=sig.pk).update(progress=37.5)
    return sig


# submit -----------------------------------------------------------------------------------------


def test_submit_with_bad_json_names_the_option(admin_user):
    error = refused("submit", "examples.echo", "--kwargs", "{value: 1}")
    assert "--kwargs is not valid JSON" in str(error) and error.returncode == 1
    assert not Signature.objects.exists()
    error = refused("submit", "examples.echo", "--kwargs", "[" * 100_000)
    assert "--kwargs is not valid JSON: nested too deeply" in str(error) and error.returncode == 1


def test_submit_unknown_task_and_missing_argument_name_each_field(admin_user):
    assert "task: unknown task 'examples.nope'" in str(refused("submit", "examples.nope"))
    error = refused("submit", "examples.sleep", "--kwargs", '{"secs": 1}')
    assert "kwargs.secs: unknown argument" in str(error) and "kwargs.seconds: this argument is required" in str(error)
    assert not Signature.objects.exists()


def test_submit_needs_an_owner(db):
    assert "no superuser exists" in str(refused("submit", "examples.noop"))
    assert "no user named 'ghost'" in str(refused("submit", "examples.noop", "--owner", "ghost"))


def test_submit_creates_and_queues_for_the_first_superuser(admin_user):
    out, _ = run("submit", "examples.echo", "--kwargs", '{"value": 7}', "--priority", "high", "--name", "seven")
    sig = Signature.objects.get()
    assert (sig.owner, sig.status, sig.priority, sig.name, sig.kwargs) == (
        admin_user,
        Status.QUEUED,
        Priority.HIGH,
        "seven",
        {"value": 7},
    )
    assert f"submitted #{sig.pk} examples.echo (queued)" in out


def test_submit_a_chain_spec_from_stdin(admin_user, django_user_model):
    alice = django_user_model.objects.create_user("alice")
    spec = {"kind": "chain", "steps": [{"task": "examples.add", "kwargs": {"a": 1}}, {"task": "examples.double"}]}
    run("submit", "--spec", "-", "--owner", "alice", stdin=io.StringIO(json.dumps(spec)))
    chain = Signature.objects.top_level().get()
    assert (chain.kind, chain.owner, chain.members.count()) == (Kind.CHAIN, alice, 2)
    drain()
    chain.refresh_from_db()
    assert (chain.status, chain.result) == (Status.COMPLETED, 2)


def test_submit_a_bad_spec_file_names_the_nested_field(admin_user, tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"kind": "chain", "steps": [{"task": "examples.echo"}, {"task": "examples.add"}]}))
    assert "steps[1].kwargs.a: this argument is required" in str(refused("submit", "--spec", str(path)))
    path.write_text("{not json")
    assert f"{path} is not valid JSON" in str(refused("submit", "--spec", str(path)))


def test_submit_a_swarm_in_batches(admin_user, tmp_path: Path):
    path = tmp_path / "swarm.json"
    tasks = [{"task": "examples.echo", "kwargs": {"value": i}} for i in range(25)]
    path.write_text(json.dumps({"kind": "swarm", "name": "bulk", "max_concurrency": 5, "tasks": tasks}))
    out, _ = run("submit", "--spec", str(path), "--batch-size", "10")
    swarm = Signature.objects.top_level().get()
    assert "added 10/25" in out and "added 25/25" in out
    assert swarm.members.count() == 25 and swarm.config["closed"] is True
    assert list(swarm.members.order_by("position").values_list("kwargs__value", flat=True)) == list(range(25))
    drain()
    swarm.refresh_from_db()
    assert (swarm.status, swarm.result) == (Status.COMPLETED, list(range(25)))


def test_submit_in_batches_validates_every_member_first(admin_user, tmp_path: Path):
    path = tmp_path / "swarm.json"
    tasks = [{"task": "examples.echo"}] * 17 + [{"task": "examples.nope"}] + [{"task": "examples.echo"}] * 5
    path.write_text(json.dumps({"kind": "swarm", "tasks": tasks, "closed": False}))
    error = refused("submit", "--spec", str(path), "--batch-size", "5")
    assert "tasks[17].task: unknown task 'examples.nope'" in str(error)
    assert not Signature.objects.exists()


def test_submit_in_batches_keeps_an_open_swarm_open(admin_user, tmp_path: Path):
    path = tmp_path / "swarm.json"
    path.write_text(json.dumps({"kind": "swarm", "tasks": [{"task": "examples.noop"}] * 4, "closed": False}))
    run("submit", "--spec", str(path), "--batch-size", "3")
    swarm = Signature.objects.top_level().get()
    assert swarm.members.count() == 4 and swarm.config["closed"] is False


def test_wait_reports_the_outcome_of_a_finished_task(admin_user):
    ok = execution.submit({"task": "examples.echo", "kwargs": {"value": "hi"}}, owner=admin_user)
    failing = execution.submit({"task": "examples.fail", "kwargs": {"message": "kaput"}}, owner=admin_user)
    drain()
    out, err = io.StringIO(), io.StringIO()
    command = submit.Command(stdout=out, stderr=err)
    command.wait(ok, interval=0)
    assert "100%" in out.getvalue() and "✓ completed" in out.getvalue() and '"hi"' in out.getvalue()
    with pytest.raises(CommandError) as caught:
        command.wait(failing, interval=0)
    assert caught.value.returncode == 1 and "RuntimeError: kaput" in err.getvalue()


# status -----------------------------------------------------------------------------------------


def test_status_lists_top_level_tasks_and_hides_deleted_ones(admin_user):
    kept = pending(admin_user, {"task": "examples.echo", "name": "kept one"})
    gone = pending(admin_user, {"task": "examples.noop", "name": "deleted one"})
    pending(admin_user, {"kind": "chain", "steps": [{"task": "examples.noop"}, {"task": "examples.noop"}]})
    deletion.delete(gone, actor="test")
    out, _ = run("status")
    assert "kept one (examples.echo)" in out and "○ pending" in out and "chain" in out
    assert "deleted one" not in out and len(out.strip().splitlines()) == 2 + 2
    out, _ = run("status", "--all")
    assert "deleted one" in out and "until" in out
    newest = run("status", "--limit", "1")[0].strip().splitlines()
    assert len(newest) == 3 and newest[-1].split()[3] == "chain" and str(kept.pk) != newest[-1].split()[0]


def test_status_detail_draws_the_progress_view(admin_user):
    sig = crm_in_step_two(admin_user)
    out, _ = run("status", str(sig.pk))
    assert "Cellphone Store CRM" in out and "Step 2 of 4: Generate application UI" in out
    assert "✓ 1. Create database tables" in out and "◐ 2. Generate application UI" in out
    assert "├─ Customer list view ✓" in out and "├─ Sales form ◐ (in progress)" in out
    assert "└─ Repair board ○ (pending)" in out and "○ 4. Configure workflows" in out
    assert "[███████████░░░░░░░░░░░░░░░░░░░] 38%" in out and "Not started yet" in out
    payload = json.loads(run("status", str(sig.pk), "--json")[0])
    assert (payload["task_id"], payload["current_step"], payload["total_steps"]) == (sig.pk, 2, 4)


def test_progress_view_shows_every_state_distinctly(admin_user):
    sig = pending(admin_user, {"task": "examples.noop", "name": "states"})
    states = [
        StepStatus.COMPLETED,
        StepStatus.RUNNING,
        StepStatus.APPROVAL,
        StepStatus.FAILED,
        StepStatus.PAUSED,
        StepStatus.SKIPPED,
        StepStatus.PENDING,
    ]
    Step.objects.bulk_create([Step(signature=sig, order=i + 1, name=s.label, status=s) for i, s in enumerate(states)])
    view = cli.progress_view(progress.payload(sig), sig)
    for order, (symbol, state) in enumerate(zip("✓◐⚠✕⏸⊘○", states, strict=True), start=1):
        assert f"{symbol} {order}. {state.label}" in view


def test_progress_view_of_a_running_task_with_an_eta(admin_user):
    payload = {
        "task_id": 1,
        "title": "Cellphone Store CRM",
        "status": Status.RUNNING,
        "progress": 65.0,
        "current_step": 2,
        "current_step_name": "Generate application UI",
        "total_steps": 4,
        "eta_seconds": 180,
        "steps": [],
        "started_at": timezone.now() - timezone.timedelta(minutes=2),
        "finished_at": None,
    }
    view = cli.progress_view(payload, Signature(pk=1, name="Cellphone Store CRM", status=Status.RUNNING))
    assert "65%" in view and "Started: 2 min ago" in view and "ETA: 3 min remaining" in view
    assert cli.progress_line(payload).startswith("[█████████████░░░░░░░] 65% · ◐ running · Step 2 of 4")


def test_status_of_an_unknown_id_fails_cleanly(db):
    error = refused("status", "999")
    assert "no task with id 999" in str(error) and error.returncode == 1


def test_status_watch_stops_when_the_task_has_ended(admin_user):
    sig = execution.submit({"task": "examples.echo", "kwargs": {"value": 1}}, owner=admin_user)
    drain()
    out, _ = run("status", str(sig.pk), "--watch", "--interval", "0")
    assert out.count("┌") == 1 and "✓ completed" in out and "Result: 1" in out


# logs -------------------------------------------------------------------------------------------


def logged_chain(owner) -> Signature:
    chain = pending(owner, {"kind": "chain", "steps": [{"task": "examples.noop"}, {"task": "examples.noop"}]})
    first, second = chain.members.order_by("position")
    LogEntry.objects.bulk_create(
        [
            LogEntry(signature=first, level=20, logger="tasks.x", message="starting up"),
            LogEntry(signature=first, level=30, logger="tasks.x", message="disk almost full"),
            LogEntry(signature=second, level=40, logger="tasks.y", message="disk write failed"),
            LogEntry(signature=second, level=10, logger="tasks.y", message="debug detail"),
        ]
    )
    return chain


def test_logs_of_a_workflow_filtered_by_level_and_text(admin_user):
    chain = logged_chain(admin_user)
    out, _ = run("logs", str(chain.pk))
    assert [line.split("] ", 1)[1] for line in out.splitlines()] == [
        "starting up",
        "disk almost full",
        "disk write failed",
        "debug detail",
    ]
    out, _ = run("logs", str(chain.pk), "--level", "warning")
    assert "WARNING" in out and "ERROR" in out and "starting up" not in out and "debug detail" not in out
    out, _ = run("logs", str(chain.pk), "--search", "disk failed")
    assert out.strip().endswith("disk write failed") and len(out.strip().splitlines()) == 1


def test_logs_as_json_and_csv(admin_user):
    chain = logged_chain(admin_user)
    out, _ = run("logs", str(chain.pk), "--format", "json", "--level", "ERROR")
    assert [e["message"] for e in json.loads(out)] == ["disk write failed"]
    out, _ = run("logs", str(chain.pk), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["level"] for r in rows] == ["INFO", "WARNING", "ERROR", "DEBUG"]


def test_logs_follow_prints_everything_of_an_ended_task_once(admin_user):
    sig = execution.submit({"task": "examples.log", "kwargs": {"lines": 3, "level": "WARNING"}}, owner=admin_user)
    drain()
    out, _ = run("logs", str(sig.pk), "--follow", "--format", "json", "--interval", "0")
    assert [json.loads(line)["message"] for line in out.splitlines()] == ["line 1 of 3", "line 2 of 3", "line 3 of 3"]


def test_logs_bad_level_is_a_clear_error(admin_user):
    sig = pending(admin_user)
    assert "unknown level 'LOUD'" in str(refused("logs", str(sig.pk), "--level", "LOUD"))


# control ----------------------------------------------------------------------------------------


def test_control_pause_a_pending_and_a_queued_signature(admin_user):
    waiting = pending(admin_user)
    queued = execution.submit({"task": "examples.echo", "kwargs": {"value": 1}}, owner=admin_user)
    for sig in (waiting, queued):
        out, _ = run("control", "pause", str(sig.pk))
        sig.refresh_from_db()
        assert sig.status == Status.PAUSED and f"paused #{sig.pk}" in out
    assert Event.objects.filter(signature=queued, type="paused", actor__startswith="cli:").exists()


def test_control_refused_transition_exits_2_without_traceback(admin_user):
    sig = pending(admin_user)
    run("control", "pause", str(sig.pk))
    error = refused("control", "pause", str(sig.pk))
    assert error.returncode == 2 and str(error).startswith("cannot pause a paused signature")
    error = refused("control", "approve", str(sig.pk))
    assert error.returncode == 2 and str(error).startswith("cannot approve")


def test_control_cancel_needs_yes(admin_user):
    chain = pending(admin_user, {"kind": "chain", "steps": [{"task": "examples.noop"}, {"task": "examples.noop"}]})
    error = refused("control", "cancel", str(chain.pk))
    assert "--yes" in str(error) and "2 signatures below it" in str(error) and error.returncode == 1
    assert Signature.objects.count() == 3
    out, _ = run("control", "cancel", str(chain.pk), "--yes")
    assert f"cancelled #{chain.pk}" in out and "3 signatures" in out
    assert not Signature.objects.exists()
    assert Event.objects.get(type="cancelled").signature_ref == chain.pk


def test_control_delete_restore_and_priority(admin_user):
    sig = pending(admin_user)
    out, _ = run("control", "delete", str(sig.pk), "--ttl", "600")
    sig.refresh_from_db()
    assert sig.deletion is not None and "restorable until" in out
    assert refused("control", "delete", str(sig.pk)).returncode == 2
    run("control", "restore", str(sig.pk))
    run("control", "priority", str(sig.pk), "--priority", "low")
    sig.refresh_from_db()
    assert (sig.deletion, sig.priority) == (None, Priority.LOW)
    assert "needs --priority" in str(refused("control", "priority", str(sig.pk)))


def test_control_retry_a_failed_task(admin_user):
    sig = execution.submit({"task": "examples.fail", "kwargs": {"times": 1}}, owner=admin_user)
    drain()
    run("control", "retry", str(sig.pk))
    drain()
    sig.refresh_from_db()
    assert (sig.status, sig.result) == (Status.COMPLETED, "ok")


# purge_deleted and resume_unfinished -------------------------------------------------------------


def test_purge_deleted_dry_run_counts_without_deleting(admin_user):
    expired, kept = pending(admin_user), pending(admin_user)
    deletion.delete(expired, ttl=0, actor="test")
    deletion.delete(kept, ttl=3600, actor="test")
    out, _ = run("purge_deleted", "--dry-run")
    assert "would purge 1 deleted signature tree" in out and Signature.objects.count() == 2
    out, _ = run("purge_deleted", "--batch-size", "10")
    assert "purged 1" in out and list(Signature.objects.all()) == [kept]


def test_resume_unfinished_reports_what_it_resumed(admin_user, django_capture_on_commit_callbacks):
    assert run("resume_unfinished")[0].strip() == "nothing to resume"
    with django_capture_on_commit_callbacks(execute=True):
        sig = execution.submit({"task": "examples.echo", "kwargs": {"value": 1}, "name": "orphan"}, owner=admin_user)
        execution.claim(sig.pk, 1)  # running, on a worker that has no heartbeat: its worker is gone
    out, _ = run("resume_unfinished", "--dry-run")
    assert "dry run" in out and f"would resume #{sig.pk} orphan run 1 (worker gone)" in out
    with django_capture_on_commit_callbacks(execute=True):
        out, _ = run("resume_unfinished")
    sig.refresh_from_db()
    assert f"resumed #{sig.pk} orphan run 1 (worker gone)" in out
    assert sig.status == Status.QUEUED and sig.runs.count() == 2


# End to end: submit --wait with a real worker -----------------------------------------------------


def worker_env() -> dict[str, str]:
    """The environment of a worker subprocess that works on this test's database and Redis."""
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        auth = f"{db['USER']}:{db['PASSWORD']}@" if db.get("USER") else ""
        url = f"postgres://{auth}{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}/{db['NAME']}"
    else:
        url = f"sqlite:///{db['NAME']}"
    return {**os.environ, "DATABASE_URL": url, "REDIS_URL": settings.REDIS_URL, "PYTHONUNBUFFERED": "1"}


def worker_when_queued(env: dict, log: Path, started: list[subprocess.Popen], timeout: float = 20) -> None:
    """Start `manage.py worker --burst` once a job waits in Redis (a burst worker quits on empty queues)."""
    queues = [django_rq.get_queue(name) for name in settings.ORCHESTRATOR_QUEUES]
    deadline = time.monotonic() + timeout
    while not any(q.count for q in queues) and time.monotonic() < deadline:
        time.sleep(0.05)
    with log.open("wb") as out:
        started.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "worker", "--burst"],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "task, kwargs, ok",
    [
        (CRM, {"seconds_per_item": 0.2}, True),
        ("examples.fail", {"message": "broken on purpose"}, False),
    ],
)
def test_submit_wait_with_a_real_worker(admin_user, tmp_path: Path, task: str, kwargs: dict, ok: bool):
    started: list[subprocess.Popen] = []
    log = tmp_path / "worker.log"
    starter = threading.Thread(target=worker_when_queued, args=(worker_env(), log, started), daemon=True)
    starter.start()
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(
            "submit", task, "--kwargs", json.dumps(kwargs), "--wait", "--interval", "0.1", stdout=out, stderr=err
        )
        outcome = 0
    except CommandError as exc:
        outcome = exc.returncode
    finally:
        starter.join(timeout=30)
        for process in started:
            process.wait(timeout=60)
        connections.close_all()
    worker_log = log.read_text(errors="replace")
    assert started and started[0].returncode == 0, worker_log
    if ok:
        assert outcome == 0, err.getvalue() + worker_log
        lines = out.getvalue().splitlines()
        assert "○ queued · Step 1 of 4: Create database tables · waiting for a worker" in lines[1]
        assert any("◐ running · Step" in line for line in lines) and "100% · ✓ completed" in lines[-3]
        assert lines[-2].startswith("✓ completed in") and json.loads(lines[-1])["steps"] == 4
    else:
        assert outcome == 1 and "RuntimeError: broken on purpose" in err.getvalue()
