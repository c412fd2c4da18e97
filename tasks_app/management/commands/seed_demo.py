"""`manage.py seed_demo`: the local admin, a demo user and a few demo workflows; safe to run again.

Passwords are random and printed once, when the user is created; they are stored nowhere else.
The workflows are submitted without starting them (run=False), so no worker is needed here.
"""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from tasks_app.services import execution

ADMIN = "admin"
DEMO_USER = "demo"
DEMO_WORKFLOWS: dict[str, dict] = {
    "demo-crm": {
        "task": "examples.build_crm",
        "name": "Cellphone Store CRM",
        "kwargs": {"title": "Cellphone Store CRM", "seconds_per_item": 1},
        "category": "demo",
    },
    "demo-chain": {
        "kind": "chain",
        "name": "Echo, double, add",
        "steps": [
            {"task": "examples.echo", "kwargs": {"value": 21}},
            {"task": "examples.double"},
            {"task": "examples.add", "kwargs": {"a": 8}},
        ],
        "category": "demo",
    },
    "demo-swarm": {
        "kind": "swarm",
        "name": "Five sleepers, two at a time",
        "max_concurrency": 2,
        "tasks": [{"task": "examples.sleep", "kwargs": {"seconds": seconds}} for seconds in (2, 3, 4, 5, 6)],
        "category": "demo",
    },
    "demo-graph": {
        "kind": "graph",
        "name": "Classify and route",
        "nodes": {
            "classify": {"task": "examples.classify", "kwargs": {"value": 72}},
            "high": {"task": "examples.echo", "kwargs": {"value": "took the high path"}},
            "low": {"task": "examples.echo", "kwargs": {"value": "took the low path"}},
        },
        "edges": [
            {"from": "classify", "to": "high", "when": {"path": "label", "op": "eq", "value": "high"}},
            {"from": "classify", "to": "low", "when": {"path": "label", "op": "eq", "value": "low"}},
        ],
        "category": "demo",
    },
}


class Command(BaseCommand):
    help = "Create the local admin, a demo user and demo workflows (not started); idempotent."

    def handle(self, *args, **options):
        self.ensure_user(ADMIN, superuser=True)
        demo = self.ensure_user(DEMO_USER, superuser=False)
        created = self.ensure_workflows(demo)
        self.stdout.write(f"Demo workflows of {DEMO_USER!r}: {created} created, "
                          f"{len(DEMO_WORKFLOWS) - created} already there (created pending, not started).")

    def ensure_user(self, username: str, *, superuser: bool):
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is not None:
            self.stdout.write(f"User {username!r} exists; its password is unchanged "
                              f"(manage.py changepassword {username}).")
            return user
        password = secrets.token_urlsafe(12)
        create = User.objects.create_superuser if superuser else User.objects.create_user
        user = create(username, email=f"{username}@localhost", password=password)
        self.stdout.write(self.style.SUCCESS(
            f"Created {'the local admin' if superuser else 'a demo user'}: "
            f"username {username}  password {password}  (shown once, stored nowhere else)"
        ))
        return user

    def ensure_workflows(self, owner) -> int:
        created = 0
        for key, spec in DEMO_WORKFLOWS.items():
            before = owner.signatures.filter(idempotency_key=key).exists()
            execution.submit(spec, owner=owner, run=False, idempotency_key=key, actor="seed_demo")
            created += not before
        return created
