"""Schemathesis' coverage phase over every operation of ``/api/schema/``, through its command line
against a live server: boundary values, wrong types, missing and extra fields, odd strings and
numbers for each parameter and body field. No answer may be a server error.

Each operation on one signature gets a signature of its own in the state that lets the action go
through (a failed one to retry, one waiting for an approval to approve...), so the run reaches the
services behind the validation and does not see only 404s. The command's report is printed when it
fails (the ``curl`` line of each 500 reproduces it).
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from tasks_app.models import Approval, LogEntry, Notification, Signature, Status
from tests.api_helpers import ECHO, make, set_status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

ST = Path(sys.executable).with_name("st")
OPEN_SWARM = {"kind": "swarm", "closed": False, "tasks": [ECHO]}


def waiting_for_approval(owner) -> Signature:
    sig = set_status(make(owner, ECHO), Status.WAITING_APPROVAL)
    Approval.objects.create(signature=sig, title="Ship it?")
    return sig


def target_ids(owner) -> dict[tuple[str, str], int]:
    """(method, path) of each operation on one signature → the id of a signature it can act on."""
    logged = make(owner, {"kind": "chain", "steps": [ECHO, {"task": "examples.double"}]})
    LogEntry.objects.create(signature=logged.members.first(), level=30, logger="tasks.echo", message="disk is slow")
    now = timezone.now()
    states = {
        ("GET", ""): logged,
        ("PATCH", ""): make(owner, ECHO),
        ("DELETE", ""): make(owner, ECHO),
        ("GET", "events"): logged,
        ("GET", "logs"): logged,
        ("GET", "progress"): logged,
        ("POST", "start"): make(owner, ECHO),
        ("POST", "pause"): make(owner, ECHO, run=True),
        ("POST", "resume"): set_status(make(owner, ECHO), Status.PAUSED),
        ("POST", "interrupt"): make(owner, ECHO, run=True),
        ("POST", "retry"): set_status(make(owner, ECHO), Status.FAILED),
        ("POST", "skip"): failed_member(owner),
        ("POST", "rerun"): set_status(make(owner, ECHO), Status.COMPLETED),
        ("POST", "restore"): set_status(
            make(owner, ECHO), Status.COMPLETED, marked_at=now, delete_after=now + timedelta(days=1)
        ),
        ("POST", "cancel"): make(owner, ECHO),
        ("POST", "approve"): waiting_for_approval(owner),
        ("POST", "reject"): waiting_for_approval(owner),
        ("POST", "tasks"): make(owner, OPEN_SWARM),
        ("POST", "close"): make(owner, OPEN_SWARM),
    }
    return {key: sig.pk for key, sig in states.items()}


def failed_member(owner) -> Signature:
    """The first member of a chain that failed with it: what skip goes on past."""
    chain = set_status(make(owner, {"kind": "chain", "steps": [ECHO, ECHO]}), Status.FAILED)
    return set_status(chain.members.order_by("position").first(), Status.FAILED)


def config(owner, targets: dict[tuple[str, str], int]) -> str:
    """schemathesis.toml: the owner's token, and the id each operation works on."""
    token = Token.objects.create(user=owner).key
    note = Notification.objects.create(owner=owner, event="task_started", title="hi", deliveries={"in_app": "sent"})
    lines = [f'headers = {{ Authorization = "Token {token}" }}']
    operations = {(method, f"/api/tasks/{{id}}/{action}"): pk for (method, action), pk in targets.items()}
    operations[("POST", "/api/notifications/{id}/read")] = note.pk
    for (method, path), pk in operations.items():
        lines += [
            "",
            "[[operations]]",
            f'include-name = "{method} {path}"',
            f'parameters = {{ "path.id" = {pk} }}',
        ]
    return "\n".join(lines) + "\n"


def status_of(pk: int) -> str | None:
    return Signature.objects.filter(pk=pk).values_list("status", flat=True).first()


def assert_the_actions_went_through(targets: dict[tuple[str, str], int]) -> None:
    """The ids were real: each action's own signature shows its effect."""
    assert status_of(targets[("POST", "pause")]) == Status.PAUSED
    assert status_of(targets[("POST", "interrupt")]) == Status.INTERRUPTED
    assert status_of(targets[("POST", "cancel")]) is None
    assert Signature.objects.get(pk=targets[("DELETE", "")]).delete_after is not None
    assert Signature.objects.get(pk=targets[("POST", "restore")]).delete_after is None
    assert Signature.objects.get(pk=targets[("POST", "close")]).config["closed"] is True
    for action in ("start", "resume", "retry", "rerun"):
        assert Signature.objects.get(pk=targets[("POST", action)]).runs.exists(), action
    for action in ("approve", "reject"):
        assert not Approval.objects.filter(signature_id=targets[("POST", action)], decided_at=None).exists(), action


def test_no_operation_answers_a_server_error(live_server, owner, tmp_path):
    targets = target_ids(owner)
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(config(owner, targets))

    run = subprocess.run(
        [
            str(ST),
            "--config-file",
            str(config_file),
            "run",
            f"{live_server.url}/api/schema/?format=json",
            "--phases",
            "coverage",
            "--checks",
            "not_a_server_error",
            "--continue-on-failure",
            "--workers",
            "2",
            "--no-color",
            "--seed",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
    )

    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    selected, total = re.search(r"Selected: (\d+)/(\d+)", run.stdout).groups()
    assert selected == total and f"Tested: {total}" in run.stdout, run.stdout[-5_000:]  # every operation
    assert_the_actions_went_through(targets)
