"""GET /api/tasks/{id}/events: the timeline of a signature's tree."""

from __future__ import annotations

import pytest

from tests.api_helpers import ECHO, make, url

pytestmark = pytest.mark.django_db


def test_the_timeline_of_a_tree(owner_client, owner):
    chain = make(owner, {"kind": "chain", "steps": [ECHO, ECHO]}, run=True)
    owner_client.post(url(chain, "pause"))

    events = owner_client.get(url(chain, "events")).json()

    assert set(events[0]) >= {"type", "at", "actor", "data"}
    assert [e["type"] for e in events] == ["created", "started", "queued", "paused"]
    assert events[-1]["actor"] == "owner"
    first_step = chain.members.get(position=0)
    assert [e["task_id"] for e in events if e["type"] == "queued"] == [first_step.pk]


def test_a_member_has_its_own_timeline(owner_client, owner):
    chain = make(owner, {"kind": "chain", "steps": [ECHO, ECHO]}, run=True)
    first_step = chain.members.get(position=0)

    assert [e["type"] for e in owner_client.get(url(first_step, "events")).json()] == ["queued"]


def test_the_audit_of_a_cancelled_member_stays_in_its_workflow(owner_client, owner):
    swarm = make(owner, {"kind": "swarm", "tasks": [ECHO, ECHO]}, run=True)
    member = swarm.members.get(position=1)

    owner_client.post(url(member, "cancel"), {"confirm": True}, format="json")

    cancelled = [e for e in owner_client.get(url(swarm, "events")).json() if e["type"] == "cancelled"]
    assert [e["task_id"] for e in cancelled] == [member.pk]


def test_limit_pages_the_timeline(owner_client, owner):
    sig = make(owner, ECHO, run=True)

    page = owner_client.get(url(sig, "events"), {"limit": 1})

    assert [e["type"] for e in page.json()] == ["created"]
    assert 'rel="next"' in page["Link"]
