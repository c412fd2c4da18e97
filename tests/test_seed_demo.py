"""`manage.py seed_demo` (run by `make run`): the admin's password shows once; a second run changes nothing."""

from __future__ import annotations

import re
from io import StringIO

from django.contrib.auth import get_user_model
from django.core.management import call_command

from tasks_app.models import Signature, Status


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def demo_workflows():
    return Signature.objects.filter(owner__username="demo", parent=None, callback_of=None)


def test_seed_demo_prints_a_working_admin_password_once_and_creates_pending_workflows(db):
    first = seed()
    password = re.search(r"username admin\s+password (\S+)", first).group(1)

    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    assert sorted(demo_workflows().values_list("kind", flat=True)) == ["chain", "graph", "swarm", "task"]
    assert set(demo_workflows().values_list("status", flat=True)) == {Status.PENDING}


def test_seed_demo_twice_creates_nothing_more_and_keeps_the_passwords(db):
    password = re.search(r"username admin\s+password (\S+)", seed()).group(1)
    rows = Signature.objects.count()

    second = seed()

    assert password not in second
    assert not re.search(r"username \w+\s+password", second)
    assert Signature.objects.count() == rows
    assert get_user_model().objects.get(username="admin").check_password(password)
