"""Creating, listing, reading, changing and soft-deleting signatures through /api/tasks/."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from tasks_app.models import Run, Signature, Status
from tests.api_helpers import ECHO, make, set_status, url
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

CONTRACT_DETAIL = {
    "id",
    "kind",
    "name",
    "task",
    "kwargs",
    "status",
    "priority",
    "progress",
    "result",
    "error",
    "attempts",
    "created_at",
    "started_at",
    "finished_at",
    "parent",
    "children",
    "callbacks",
    "deletion",
}


class TestCreate:
    def test_a_task_starts_queued_and_answers_the_contract_detail(self, owner_client):
        response = owner_client.post("/api/tasks/", {**ECHO, "name": "hello", "tags": ["demo"]}, format="json")

        assert response.status_code == 201
        body = response.json()
        assert CONTRACT_DETAIL <= set(body)
        assert body["task"] == "examples.echo"
        assert body["kwargs"] == {"value": 1}
        assert body["status"] == Status.QUEUED
        assert body["owner"] == "owner"
        assert [run["number"] for run in body["runs"]] == [1]
        assert body["deletion"] is None

    def test_run_false_leaves_it_pending_without_a_run(self, owner_client):
        response = owner_client.post("/api/tasks/", {**ECHO, "run": False}, format="json")

        assert response.status_code == 201
        assert response.json()["status"] == Status.PENDING
        assert not Run.objects.exists()

    def test_a_chain_lists_its_steps_in_order(self, owner_client):
        spec = {"kind": "chain", "steps": [{"task": "examples.add", "kwargs": {"a": 1}}, {"task": "examples.double"}]}

        body = owner_client.post("/api/tasks/", spec, format="json").json()

        assert body["kind"] == "chain"
        assert [(c["task"], c["status"]) for c in body["children"]] == [
            ("examples.add", "queued"),
            ("examples.double", "pending"),
        ]
        assert body["status"] == Status.RUNNING

    def test_a_swarm_shows_members_and_config(self, owner_client):
        spec = {"kind": "swarm", "max_concurrency": 1, "tasks": [ECHO, ECHO, ECHO], "on_success": [ECHO]}

        body = owner_client.post("/api/tasks/", spec, format="json").json()

        assert [c["status"] for c in body["children"]] == ["queued", "pending", "pending"]
        assert body["children_count"] == 3
        assert body["config"]["max_concurrency"] == 1
        assert [(c["on"], c["status"]) for c in body["callbacks"]] == [("success", "pending")]

    def test_a_graph_names_its_nodes(self, owner_client):
        spec = {
            "kind": "graph",
            "nodes": {"c": {"task": "examples.classify", "kwargs": {"value": 70}}, "hi": {"task": "examples.noop"}},
            "edges": [{"from": "c", "to": "hi", "when": {"template": "label_is", "params": {"value": "high"}}}],
        }

        body = owner_client.post("/api/tasks/", {**spec, "run": False}, format="json").json()

        assert [c["node"] for c in body["children"]] == ["c", "hi"]
        assert body["config"]["edges"][0]["to"] == "hi"

    def test_a_repeated_idempotency_key_returns_the_first_signature(self, owner_client):
        first = owner_client.post("/api/tasks/", {**ECHO, "idempotency_key": "k-1"}, format="json")
        again = owner_client.post("/api/tasks/", {**ECHO, "idempotency_key": "k-1"}, format="json")

        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]
        assert Signature.objects.count() == 1


class TestList:
    def test_lists_top_level_signatures_only(self, owner_client, owner):
        chain = make(owner, {"kind": "chain", "steps": [ECHO, ECHO]})
        single = make(owner, ECHO)

        body = owner_client.get("/api/tasks/").json()

        assert body["count"] == 2
        assert [row["id"] for row in body["results"]] == [single.pk, chain.pk]
        assert body["results"][1]["members_count"] == 2

    def test_the_list_costs_the_same_few_queries_for_any_number_of_rows(
        self, owner_client, owner, django_assert_max_num_queries
    ):
        for _ in range(20):
            make(owner, {"kind": "chain", "steps": [ECHO, ECHO], "tags": ["x"]})

        with django_assert_max_num_queries(3):  # count, page (members counted in a subquery), nothing per row
            rows = owner_client.get("/api/tasks/", {"page_size": 100}).json()["results"]

        assert len(rows) == 20 and {row["members_count"] for row in rows} == {2}

    def test_parent_lists_the_members_in_order(self, owner_client, owner):
        swarm = make(
            owner, {"kind": "swarm", "tasks": [{"task": "examples.echo", "kwargs": {"value": i}} for i in range(3)]}
        )

        rows = owner_client.get("/api/tasks/", {"parent": swarm.pk}).json()["results"]

        assert [row["position"] for row in rows] == [0, 1, 2]
        assert all(row["parent"] == swarm.pk for row in rows)

    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            ({"status": "failed"}, {"failed"}),
            ({"status": "failed,completed"}, {"failed", "done"}),
            ({"kind": "chain"}, {"chain"}),
            ({"task": "examples.fail"}, {"failed"}),
            ({"category": "billing"}, {"done"}),
            ({"tag": "nightly"}, {"done"}),
            ({"q": "ECHO"}, {"done"}),
            ({"q": "weekly"}, {"chain"}),
        ],
    )
    def test_filters(self, owner_client, owner, params, expected):
        made = {
            "failed": make(owner, {"task": "examples.fail", "name": "failed"}),
            "done": make(owner, {**ECHO, "name": "done", "category": "billing", "tags": ["nightly"]}),
            "chain": make(owner, {"kind": "chain", "name": "chain (weekly)", "steps": [ECHO, ECHO]}),
        }
        set_status(made["failed"], Status.FAILED)
        set_status(made["done"], Status.COMPLETED)
        names = {sig.pk: key for key, sig in made.items()}

        rows = owner_client.get("/api/tasks/", params).json()["results"]

        assert {names[row["id"]] for row in rows} == expected

    def test_created_after_and_before(self, owner_client, owner):
        old, new = make(owner, {**ECHO, "name": "old"}), make(owner, {**ECHO, "name": "new"})
        Signature.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
        cutoff = (timezone.now() - timedelta(days=1)).isoformat()

        after = owner_client.get("/api/tasks/", {"created_after": cutoff}).json()["results"]
        before = owner_client.get("/api/tasks/", {"created_before": cutoff}).json()["results"]

        assert [row["id"] for row in after] == [new.pk]
        assert [row["id"] for row in before] == [old.pk]

    def test_ordering_and_pagination(self, owner_client, owner):
        ids = [
            make(owner, {**ECHO, "name": f"t{i}", "priority": p}).pk for i, p in enumerate(["low", "high", "medium"])
        ]

        by_priority = owner_client.get("/api/tasks/", {"ordering": "priority"}).json()["results"]
        first_page = owner_client.get("/api/tasks/", {"ordering": "id", "page_size": 2}).json()
        second_page = owner_client.get("/api/tasks/", {"ordering": "id", "page_size": 2, "page": 2}).json()

        assert [row["priority"] for row in by_priority] == ["high", "medium", "low"]
        assert first_page["count"] == 3
        assert [row["id"] for row in first_page["results"] + second_page["results"]] == ids
        assert first_page["next"] and second_page["next"] is None


class TestDetailAndPatch:
    def test_detail_of_a_member_and_its_callbacks(self, owner_client, owner):
        chain = make(owner, {"kind": "chain", "steps": [ECHO, {**ECHO, "on_error": [{"task": "examples.noop"}]}]})
        member = chain.members.get(position=1)

        body = owner_client.get(url(member)).json()

        assert body["parent"] == chain.pk and body["root"] == chain.pk
        assert [(c["on"], c["status"]) for c in body["callbacks"]] == [("error", "pending")]

    def test_patch_priority_name_category_tags(self, owner_client, owner):
        sig = make(owner, ECHO, run=True)

        response = owner_client.patch(
            url(sig), {"priority": "high", "name": "renamed", "category": "ops", "tags": ["a", "b"]}, format="json"
        )

        assert response.status_code == 200
        sig.refresh_from_db()
        assert (sig.priority, sig.name, sig.category, sig.tags) == ("high", "renamed", "ops", ["a", "b"])
        assert sig.events.filter(type="priority_changed").exists()

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"priority": "urgent"}, "priority"),
            ({"tags": "a"}, "tags"),
            ({"tags": ["x" * 51]}, "tags[0]"),
            ({"status": "completed"}, "status"),
            ({"name": "n" * 201}, "name"),
        ],
    )
    def test_patch_names_the_bad_field(self, owner_client, owner, body, field):
        sig = make(owner, ECHO)

        response = owner_client.patch(url(sig), body, format="json")

        assert response.status_code == 400
        assert field in response.json()["errors"]

    def test_put_is_not_allowed(self, owner_client, owner):
        response = owner_client.put(url(make(owner, ECHO)), ECHO, format="json")

        assert response.status_code == 405
        assert response.json()["code"] == "method_not_allowed"


class TestSoftDelete:
    def test_delete_hides_it_and_the_trash_shows_it_until_restore(self, owner_client, owner):
        sig = make(owner, ECHO)

        deleted = owner_client.delete(url(sig) + "?ttl=60")

        assert deleted.status_code == 200
        assert deleted.json()["deletion"]["status"] == "marked_for_deletion"
        assert owner_client.get("/api/tasks/").json()["count"] == 0
        trash = owner_client.get("/api/tasks/", {"status": "marked_for_deletion"}).json()["results"]
        assert [row["id"] for row in trash] == [sig.pk]
        assert owner_client.get(url(sig)).status_code == 200

        restored = owner_client.post(url(sig, "restore"))

        assert restored.status_code == 200 and restored.json()["deletion"] is None
        assert owner_client.get("/api/tasks/").json()["count"] == 1

    def test_bad_ttl_and_double_delete(self, owner_client, owner):
        sig = make(owner, ECHO)

        assert owner_client.delete(url(sig) + "?ttl=soon").json()["errors"].keys() == {"ttl"}
        assert owner_client.delete(url(sig) + "?ttl=-1").status_code == 400
        assert owner_client.delete(url(sig)).status_code == 200
        assert owner_client.delete(url(sig)).status_code == 409


class TestOwnership:
    def test_others_signatures_answer_404_everywhere(self, owner, stranger_client):
        sig = make(owner, ECHO)
        other = stranger_client

        assert other.get(url(sig)).status_code == 404
        assert other.patch(url(sig), {"name": "x"}, format="json").status_code == 404
        assert other.delete(url(sig)).status_code == 404
        assert other.post(url(sig, "pause")).status_code == 404
        assert other.get(url(sig, "logs")).status_code == 404
        assert other.get("/api/tasks/").json()["count"] == 0
        assert other.get("/api/tasks/", {"parent": sig.pk}).json()["count"] == 0

    def test_staff_with_the_permissions_see_and_control_everything(self, owner, colleague, operator_client):
        make(owner, ECHO), make(colleague, ECHO)
        sig = make(owner, ECHO)

        admin = operator_client

        assert admin.get("/api/tasks/").json()["count"] == 3
        assert admin.post(url(sig, "pause")).status_code == 200

    def test_anonymous_is_refused(self, owner, api_client):
        sig = make(owner, ECHO)
        anonymous = api_client

        assert anonymous.get("/api/tasks/").status_code in (401, 403)
        assert anonymous.get(url(sig)).status_code in (401, 403)
        assert anonymous.post("/api/tasks/", ECHO, format="json").status_code in (401, 403)

    def test_token_and_basic_authentication(self, owner, api_client):
        token = Token.objects.create(user=owner)
        basic = base64.b64encode(f"owner:{PASSWORD}".encode()).decode()
        client = api_client

        assert client.get("/api/tasks/", HTTP_AUTHORIZATION=f"Token {token.key}").status_code == 200
        assert client.get("/api/tasks/", HTTP_AUTHORIZATION=f"Basic {basic}").status_code == 200
        assert client.get("/api/tasks/", HTTP_AUTHORIZATION="Token wrong").status_code in (401, 403)

    def test_a_token_is_obtained_with_username_and_password(self, owner, api_client):
        response = api_client.post("/api/auth/token/", {"username": "owner", "password": PASSWORD}, format="json")

        assert response.status_code == 200
        assert response.json()["token"] == Token.objects.get(user=owner).key
