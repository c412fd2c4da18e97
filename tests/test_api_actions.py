"""Lifecycle actions, cancel, approvals, swarm bulk add and close: /api/tasks/{id}/<action>."""

from __future__ import annotations

import pytest

from tasks_app.models import Event, Signature, Status
from tests.api_helpers import ECHO, make, set_status, url
from tests.drain import drain

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("action", "forbidden", "allowed", "after"),
    [
        ("start", Status.COMPLETED, Status.PENDING, Status.QUEUED),
        ("pause", Status.COMPLETED, Status.QUEUED, Status.PAUSED),
        ("resume", Status.RUNNING, Status.PAUSED, Status.QUEUED),
        ("interrupt", Status.COMPLETED, Status.QUEUED, Status.INTERRUPTED),
        ("retry", Status.COMPLETED, Status.FAILED, Status.QUEUED),
        ("rerun", Status.QUEUED, Status.COMPLETED, Status.QUEUED),
    ],
)
def test_lifecycle_action_is_409_where_the_status_forbids_it(owner_client, owner, action, forbidden, allowed, after):
    sig = set_status(make(owner, ECHO), forbidden)

    refused = owner_client.post(url(sig, action))

    assert refused.status_code == 409
    assert refused.json()["code"] == "invalid_transition"
    assert Signature.objects.get(pk=sig.pk).status == forbidden

    set_status(sig, allowed)
    done = owner_client.post(url(sig, action))

    assert done.status_code == 200, done.content
    assert done.json()["status"] == after


def test_restore_is_409_unless_marked_for_deletion(owner_client, owner):
    assert owner_client.post(url(make(owner, ECHO), "restore")).status_code == 409


def test_actions_have_no_trailing_slash(owner_client, owner):
    sig = make(owner, ECHO)

    assert owner_client.post(url(sig, "pause")).status_code == 200
    assert owner_client.post(url(sig, "pause/")).status_code == 404


class TestCancel:
    def test_without_confirm_it_is_400_and_nothing_changes(self, owner_client, owner):
        sig = make(owner, ECHO, run=True)

        for body in ({}, {"confirm": False}, {"confirm": "yes"}):
            response = owner_client.post(url(sig, "cancel"), body, format="json")
            assert response.status_code == 400
            assert "confirm" in response.json()["errors"]
        assert Signature.objects.get(pk=sig.pk).status == Status.QUEUED

    def test_with_confirm_the_tree_goes_and_the_audit_stays(self, owner_client, owner):
        chain = make(owner, {"kind": "chain", "steps": [ECHO, ECHO]}, run=True)

        response = owner_client.post(url(chain, "cancel"), {"confirm": True}, format="json")

        assert response.status_code == 200
        body = response.json()
        assert body["detail"] == "cancelled"
        assert body["audit"]["type"] == "cancelled"
        assert body["audit"]["actor"] == "owner"
        assert body["audit"]["data"]["deleted"]["signatures"] == 3
        assert owner_client.get(url(chain)).status_code == 404
        assert not Signature.objects.exists()
        assert Event.objects.filter(type="cancelled", signature_ref=chain.pk).exists()


class TestApprovals:
    @pytest.fixture
    def waiting(self, owner) -> Signature:
        """The CRM demo stopped at its approval step (run in this process, as a worker would)."""
        sig = make(owner, {"task": "examples.build_crm", "kwargs": {"seconds_per_item": 0, "approval": True}}, run=True)
        drain()
        sig.refresh_from_db()
        return sig

    def test_the_detail_shows_the_pending_approval_and_approve_decides_once(self, owner_client, waiting):
        assert waiting.status == Status.WAITING_APPROVAL
        approval = owner_client.get(url(waiting)).json()["approval"]
        assert approval["status"] == "pending" and approval["title"].startswith("Configure workflows")

        decided = owner_client.post(url(waiting, "approve"), {"comment": "go"}, format="json")

        assert decided.status_code == 200
        assert decided.json()["status"] == Status.QUEUED and decided.json()["approval"] is None
        assert owner_client.post(url(waiting, "reject"), {}, format="json").status_code == 409

    def test_reject_records_the_comment(self, owner_client, waiting):
        assert owner_client.post(url(waiting, "reject"), {"comment": "not now"}, format="json").status_code == 200
        assert waiting.approvals.get().comment == "not now"

    def test_approve_and_reject_are_409_when_no_approval_is_pending(self, owner_client, owner):
        sig = make(owner, ECHO, run=True)

        assert owner_client.post(url(sig, "approve"), {"comment": ""}, format="json").status_code == 409
        assert owner_client.post(url(sig, "reject"), {"comment": "no"}, format="json").status_code == 409

    def test_a_comment_must_be_text(self, owner_client, owner):
        sig = make(owner, ECHO, run=True)

        response = owner_client.post(url(sig, "approve"), {"comment": ["x"]}, format="json")

        assert response.status_code == 400
        assert "comment" in response.json()["errors"]


class TestSwarmBulkAdd:
    @pytest.fixture
    def swarm(self, owner):
        return make(owner, {"kind": "swarm", "closed": False, "max_concurrency": 2, "tasks": [ECHO]}, run=True)

    def test_adds_members_in_order(self, owner_client, swarm):
        specs = [{"task": "examples.echo", "kwargs": {"value": i}} for i in range(3)]

        response = owner_client.post(url(swarm, "tasks"), {"tasks": specs}, format="json")

        assert response.status_code == 201
        added = response.json()["added"]
        assert response.json()["rejected"] == []
        assert list(swarm.members.order_by("position").values_list("pk", flat=True))[1:] == added
        assert [m.kwargs["value"] for m in Signature.objects.filter(pk__in=added).order_by("position")] == [0, 1, 2]

    def test_atomic_one_bad_spec_adds_nothing_and_names_index_and_field(self, owner_client, swarm):
        specs = [ECHO, {"task": "examples.nope"}, ECHO]

        response = owner_client.post(url(swarm, "tasks"), {"tasks": specs}, format="json")

        assert response.status_code == 400
        assert "tasks[1].task" in response.json()["errors"]
        assert swarm.members.count() == 1

    def test_not_atomic_adds_the_valid_ones_and_reports_the_rest(self, owner_client, swarm):
        specs = [ECHO, {"task": "examples.echo", "kwargs": []}, ECHO]

        response = owner_client.post(url(swarm, "tasks"), {"tasks": specs, "atomic": False}, format="json")

        assert response.status_code == 201
        body = response.json()
        assert len(body["added"]) == 2
        assert body["rejected"] == [{"index": 1, "errors": {"tasks[1].kwargs": "must be a JSON object"}}]
        assert swarm.members.count() == 3

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "tasks"),
            ({"tasks": ECHO}, "tasks"),
            ({"tasks": [], "atomic": "maybe"}, "atomic"),
            ({"tasks": [], "batch_size": 0}, "batch_size"),
        ],
    )
    def test_bad_envelope(self, owner_client, swarm, body, field):
        response = owner_client.post(url(swarm, "tasks"), body, format="json")

        assert response.status_code == 400
        assert field in response.json()["errors"]

    def test_close_then_add_is_409(self, owner_client, swarm):
        closed = owner_client.post(url(swarm, "close"))

        assert closed.status_code == 200
        assert closed.json()["config"]["closed"] is True
        assert owner_client.post(url(swarm, "tasks"), {"tasks": [ECHO]}, format="json").status_code == 409
        assert owner_client.post(url(swarm, "close")).status_code == 409

    def test_only_a_swarm_takes_members(self, owner_client, owner):
        sig = make(owner, ECHO)

        assert owner_client.post(url(sig, "tasks"), {"tasks": [ECHO]}, format="json").status_code == 409
        assert owner_client.post(url(sig, "close")).status_code == 409
