"""Skip a failure, modify and retry, retry from the failed step (issue 19, points 2 to 4).

Service and API level, with queued work run in this process (tests/drain.py); the same behaviour
on real workers is in tests/test_skip_retry_e2e.py."""

from __future__ import annotations

import pytest

from tasks_app.models import Event, Run, Signature, Status, StepStatus
from tasks_app.services import execution, lifecycle
from tests.api_helpers import fresh, url
from tests.drain import drain

pytestmark = pytest.mark.django_db

CRM_SUBSTEPS = ["Customer list view", "Product list view", "Sales form", "Repair board"]


def crm(fail_step: str) -> dict:
    return {"task": "examples.build_crm", "kwargs": {"seconds_per_item": 0, "fail_step": fail_step}}


def failed(owner, spec: dict) -> Signature:
    sig = execution.submit(spec, owner=owner)
    drain()
    sig = fresh(sig)
    assert sig.status == Status.FAILED, sig.error
    return sig


def step_states(sig: Signature) -> dict[str, str]:
    return dict(sig.steps.order_by("order").values_list("name", "status"))


def completions(sig: Signature) -> dict[str, int]:
    """How many times each step completed, from the timeline."""
    counts: dict[str, int] = {}
    for event in Event.objects.filter(signature_ref=sig.pk, type="step_completed"):
        counts[event.data["name"]] = counts.get(event.data["name"], 0) + 1
    return counts


# Skip a failed step ------------------------------------------------------------------------------


def test_skip_a_failed_step_runs_the_task_on_from_the_next_step(owner, owner_client):
    sig = failed(owner, crm("Add search and filters"))
    assert step_states(sig)["Add search and filters"] == StepStatus.FAILED

    response = owner_client.post(url(sig, "skip"))

    assert response.status_code == 200, response.json()
    assert response.json()["status"] == Status.QUEUED
    drain()
    sig = fresh(sig)
    assert sig.status == Status.COMPLETED
    assert step_states(sig) == {"Create database tables": StepStatus.COMPLETED,
                                "Generate application UI": StepStatus.COMPLETED,
                                "Add search and filters": StepStatus.SKIPPED,
                                "Configure workflows": StepStatus.COMPLETED}
    # Nothing ran twice: the completed steps were not redone, the skipped one not run again.
    assert sig.result["executed"] == {"Create database tables": 1, **dict.fromkeys(CRM_SUBSTEPS, 1),
                                      "Add search and filters": 1, "Configure workflows": 1}
    assert completions(sig) == {"Create database tables": 1, "Generate application UI": 1, "Configure workflows": 1}
    audit = Event.objects.get(signature_ref=sig.pk, type="skipped")
    assert (audit.actor, audit.data["step"]) == ("owner", "Add search and filters")
    assert sig.progress == 100


def test_skip_is_409_where_not_allowed_and_changes_nothing(owner, owner_client):
    no_steps = failed(owner, {"task": "examples.fail"})
    done = execution.submit({"task": "examples.echo", "kwargs": {"value": 1}}, owner=owner)
    drain()
    swarm = failed(owner, {"kind": "swarm", "stop_after_n_failures": 1, "tasks": [{"task": "examples.fail"}]})
    handled = execution.submit({"kind": "graph", "nodes": {"try": {"task": "examples.fail"},
                                                           "fallback": {"task": "examples.noop"}},
                                "edges": [{"from": "try", "to": "fallback", "when": {"on": "failure"}}]}, owner=owner)
    drain()

    cases = {
        no_steps: "no failed step",
        fresh(done): "only a failed signature",
        swarm.members.get(): "a member of a swarm",
        handled.members.get(node_key="try"): "its graph is completed",  # a failure edge handled it
    }
    for sig, reason in cases.items():
        response = owner_client.post(url(sig, "skip"))
        assert response.status_code == 409, (sig, response.json())
        assert reason in response.json()["detail"]
        assert fresh(sig).status == sig.status
    assert fresh(handled).status == Status.COMPLETED
    assert not Event.objects.filter(type="skipped").exists()


def test_skip_refuses_unknown_fields_and_results_a_task_could_not_return(owner, owner_client, settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "MAX_RESULT_BYTES": 100}
    chain = failed(owner, {"kind": "chain", "steps": [{"task": "examples.fail"}, {"task": "examples.echo"}]})
    member = chain.members.get(position=0)

    for body, field in (({"reslt": 1}, "reslt"), ({"result": "x" * 200}, "result")):
        response = owner_client.post(url(member, "skip"), body, format="json")
        assert response.status_code == 400, response.json()
        assert field in response.json()["errors"]
    assert (fresh(member).status, fresh(chain).status) == (Status.FAILED, Status.FAILED)


# Skip a failed member ----------------------------------------------------------------------------


def test_skip_a_failed_chain_member_with_a_substitute_result(owner, owner_client):
    chain = failed(owner, {"kind": "chain", "steps": [
        {"task": "examples.echo", "kwargs": {"value": 3}}, {"task": "examples.fail"}, {"task": "examples.double"}],
        "on_success": [{"task": "examples.echo", "kwargs": {"value": "done"}}]})
    member = chain.members.get(position=1)
    assert chain.members.get(position=2).status == Status.SKIPPED  # skipped because the chain failed

    response = owner_client.post(url(member, "skip"), {"result": 21}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["status"] == Status.SKIPPED
    drain()
    chain = fresh(chain)
    assert (chain.status, chain.result, chain.error) == (Status.COMPLETED, 42, None)
    assert (fresh(member).status, fresh(member).result) == (Status.SKIPPED, 21)
    assert chain.members.get(position=2).inbound == {"input": 21}
    assert chain.callbacks.get().status == Status.COMPLETED  # its success callback fired after all
    assert Run.objects.filter(signature=member).count() == 1  # the skipped member did not run again
    assert Event.objects.get(signature_ref=member.pk, type="skipped").data == {"result": 21}


def test_skip_a_chain_member_without_a_result_passes_null(owner, owner_client):
    chain = failed(owner, {"kind": "chain", "steps": [{"task": "examples.fail"}, {"task": "examples.echo"}]})

    assert owner_client.post(url(chain.members.get(position=0), "skip")).status_code == 200
    drain()

    chain = fresh(chain)
    assert (chain.status, chain.result) == (Status.COMPLETED, None)
    assert chain.members.get(position=1).inbound == {"input": None}


def test_skip_a_failed_graph_node_takes_its_edges_as_if_it_had_returned(owner, owner_client):
    graph = failed(owner, {"kind": "graph", "nodes": {
        "a": {"task": "examples.echo", "kwargs": {"value": 1}},
        "b": {"task": "examples.fail"},
        "high": {"task": "examples.double"},
        "low": {"task": "examples.noop"}},
        "edges": [{"from": "a", "to": "b"},
                  {"from": "b", "to": "high", "when": {"path": "", "op": "gte", "value": 50}},
                  {"from": "b", "to": "low", "when": {"path": "", "op": "lt", "value": 50}}]})
    assert graph.members.get(node_key="high").status == Status.SKIPPED

    response = owner_client.post(url(graph.members.get(node_key="b"), "skip"), {"result": 60}, format="json")

    assert response.status_code == 200, response.json()
    drain()
    graph = fresh(graph)
    assert graph.status == Status.COMPLETED
    assert graph.result == {"a": 1, "b": 60, "high": 120}
    assert graph.members.get(node_key="low").status == Status.SKIPPED


def test_a_later_retry_of_the_graph_keeps_the_skipped_node_skipped(owner):
    graph = failed(owner, {"kind": "graph", "nodes": {
        "a": {"task": "examples.fail"}, "b": {"task": "examples.double"},
        "c": {"task": "examples.fail", "kwargs": {"times": 1}}},
        "edges": [{"from": "a", "to": "b"}]})
    lifecycle.skip(graph.members.get(node_key="a"), result=4, actor="t")
    drain()
    graph = fresh(graph)
    assert graph.status == Status.FAILED  # c still failed: the graph's status is recomputed, not forced

    lifecycle.retry(graph, actor="t")
    drain()

    graph = fresh(graph)
    assert (graph.status, graph.result) == (Status.COMPLETED, {"a": 4, "b": 8, "c": "ok"})
    assert Run.objects.filter(signature__node_key="a", signature__parent=graph).count() == 1


# Retry: from the failed step, from the start, with new arguments ---------------------------------


def test_retry_resumes_from_the_failed_step_and_keeps_the_checkpoint(owner, owner_client):
    sig = failed(owner, crm("Generate application UI"))
    assert sig.checkpoint == {"executed": {"Create database tables": 1, "Customer list view": 1}}

    response = owner_client.post(url(sig, "retry"))

    assert response.status_code == 200
    drain()
    sig = fresh(sig)
    assert sig.status == Status.COMPLETED
    # Only the piece of work the failure interrupted ran twice.
    assert sig.result["executed"] == {"Create database tables": 1, "Customer list view": 2, "Product list view": 1,
                                      "Sales form": 1, "Repair board": 1, "Add search and filters": 1,
                                      "Configure workflows": 1}
    assert completions(sig)["Create database tables"] == 1
    assert Event.objects.get(signature_ref=sig.pk, type="retried").data == {"from_start": False}


def test_retry_from_start_redoes_completed_steps(owner, owner_client):
    sig = failed(owner, crm("Add search and filters"))

    response = owner_client.post(url(sig, "retry"), {"from_start": True}, format="json")

    assert response.status_code == 200
    drain()
    sig = fresh(sig)
    assert sig.status == Status.COMPLETED
    # A fresh start: the checkpoint went, every step ran again in this attempt...
    assert sig.result["executed"] == {"Create database tables": 1, **dict.fromkeys(CRM_SUBSTEPS, 1),
                                      "Add search and filters": 1, "Configure workflows": 1}
    # ...and the steps completed before the failure completed twice in all.
    assert completions(sig) == {"Create database tables": 2, "Generate application UI": 2,
                                "Add search and filters": 1, "Configure workflows": 1}


def test_modify_and_retry_replaces_the_arguments_and_records_both(owner, owner_client):
    sig = failed(owner, {"task": "examples.fail", "kwargs": {"message": "bad input"}})

    response = owner_client.post(url(sig, "retry"), {"kwargs": {"times": 0}}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["kwargs"] == {"times": 0}
    drain()
    sig = fresh(sig)
    assert (sig.status, sig.result, sig.kwargs, sig.spec["kwargs"]) == (Status.COMPLETED, "ok", {"times": 0},
                                                                        {"times": 0})
    event = Event.objects.get(signature_ref=sig.pk, type="retried")
    assert event.data == {"from_start": False, "old_kwargs": {"message": "bad input"}, "new_kwargs": {"times": 0}}
    assert event.actor == "owner"


@pytest.mark.parametrize(("body", "field"), [
    ({"kwargs": {"second": 1}}, "kwargs.second"),  # unknown argument
    ({"kwargs": {"step": 1}}, "kwargs.seconds"),  # a required one missing
    ({"kwargs": [1]}, "kwargs"),
    ({"kwargs": None}, "kwargs"),
    ({"from_start": "maybe"}, "from_start"),
    ({"kwarg": {"seconds": 1}}, "kwarg"),
])
def test_modify_and_retry_with_bad_input_is_400_naming_the_field_and_changes_nothing(owner, owner_client, body,
                                                                                     field):
    sig = execution.submit({"task": "examples.sleep", "kwargs": {"seconds": 0}}, owner=owner)
    Signature.objects.filter(pk=sig.pk).update(status=Status.FAILED)
    runs, events = Run.objects.count(), Event.objects.count()

    response = owner_client.post(url(sig, "retry"), body, format="json")

    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"], response.json()
    assert (fresh(sig).status, fresh(sig).kwargs) == (Status.FAILED, {"seconds": 0})
    assert (Run.objects.count(), Event.objects.count()) == (runs, events)


def test_new_arguments_of_a_container_are_refused(owner, owner_client):
    chain = failed(owner, {"kind": "chain", "steps": [{"task": "examples.fail"}, {"task": "examples.noop"}]})

    response = owner_client.post(url(chain, "retry"), {"kwargs": {"times": 0}}, format="json")

    assert response.status_code == 400
    assert "only a task's arguments" in response.json()["errors"]["kwargs"]


# The one rule every entry point shows -------------------------------------------------------------


def test_skip_is_offered_exactly_where_the_service_allows_it(owner):
    from tasks_app import cli
    from tasks_app.views.task_detail import allowed_actions

    allowed = failed(owner, crm("Add search and filters"))
    refused = failed(owner, {"task": "examples.fail"})

    assert lifecycle.can_skip(allowed) and "skip" in allowed_actions(allowed) and "skip" in cli.available_actions(
        allowed)
    assert not lifecycle.can_skip(refused)
    assert "skip" not in allowed_actions(refused) and "skip" not in cli.available_actions(refused)


# CLI, chat, admin and the task page ----------------------------------------------------------------


def call(*args: str) -> str:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_cli_control_skip_and_retry_with_options(admin_user):
    from django.core.management.base import CommandError

    sig = failed(admin_user, crm("Add search and filters"))
    assert "skip" in call("status", str(sig.pk))  # offered among the actions

    assert "skipped the failure of" in call("control", "skip", str(sig.pk))
    drain()
    assert fresh(sig).status == Status.COMPLETED
    with pytest.raises(CommandError) as refused:
        call("control", "skip", str(sig.pk))
    assert refused.value.returncode == 2 and "only a failed signature" in str(refused.value)

    chain = failed(admin_user, {"kind": "chain", "steps": [{"task": "examples.fail"}, {"task": "examples.double"}]})
    call("control", "skip", str(chain.members.get(position=0).pk), "--result", "5")
    drain()
    assert (fresh(chain).status, fresh(chain).result) == (Status.COMPLETED, 10)

    task = failed(admin_user, {"task": "examples.fail"})
    with pytest.raises(CommandError) as bad:
        call("control", "retry", str(task.pk), "--kwargs", '{"tims": 0}')
    assert "kwargs.tims" in str(bad.value) and fresh(task).status == Status.FAILED
    assert "retrying from the start" in call("control", "retry", str(task.pk), "--kwargs", '{"times": 0}',
                                             "--from-start")
    drain()
    assert (fresh(task).status, fresh(task).kwargs) == (Status.COMPLETED, {"times": 0})


def test_chat_skip_it(owner):
    from tasks_app.services import chat

    chain = failed(owner, {"kind": "chain", "name": "Import leads",
                           "steps": [{"task": "examples.fail"}, {"task": "examples.echo", "kwargs": {"value": 2}}]})
    answer = chat.reply(owner, "skip it")
    assert (answer.action, answer.task_id) == ("skip", chain.pk), answer.reply
    assert "Skipped the failed member" in answer.reply
    drain()
    assert fresh(chain).status == Status.COMPLETED

    crm_task = failed(owner, crm("Configure workflows"))
    answer = chat.reply(owner, "skip my crm task")
    assert answer.action == "skip" and "“Configure workflows”" in answer.reply
    drain()
    assert fresh(crm_task).status == Status.COMPLETED
    assert Event.objects.get(signature_ref=crm_task.pk, type="skipped").actor == "chat:owner"

    refused = chat.reply(owner, "skip my crm task")
    assert refused.action is None and "can't skip" in refused.reply


def test_admin_skip_action_and_button(admin_client, admin_user):
    from django.urls import reverse

    sig = failed(admin_user, crm("Add search and filters"))
    page = admin_client.get(reverse("admin:tasks_app_signature_change", args=[sig.pk])).content.decode()
    assert "skip_selected" in page
    done = failed(admin_user, {"task": "examples.fail"})
    page = admin_client.get(reverse("admin:tasks_app_signature_change", args=[done.pk])).content.decode()
    assert "skip_selected" not in page

    admin_client.post(reverse("admin:tasks_app_signature_changelist"),
                      {"action": "skip_selected", "_selected_action": [sig.pk]}, follow=True)

    assert fresh(sig).status == Status.QUEUED
    assert Event.objects.get(signature_ref=sig.pk, type="skipped").actor == "admin"


def test_page_shows_skip_only_where_allowed_and_skips(owner):
    from django.test import Client
    from django.urls import reverse

    web = Client()
    web.force_login(owner)
    allowed = failed(owner, crm("Add search and filters"))
    refused = failed(owner, {"task": "examples.fail"})

    assert 'id="action-skip"' in web.get(reverse("task_detail", args=[allowed.pk])).content.decode()
    page = web.get(reverse("task_detail", args=[refused.pk])).content.decode()
    assert 'id="action-skip"' not in page and 'id="action-edit-retry"' in page

    web.post(reverse("task_action", args=[allowed.pk, "skip"]))
    assert fresh(allowed).status == Status.QUEUED
    web.post(reverse("task_action", args=[refused.pk, "retry_from_start"]))
    assert Event.objects.get(signature_ref=refused.pk, type="retried").data == {"from_start": True}


def test_edit_and_retry_page_is_prefilled_and_retries_with_the_new_arguments(owner):
    from django.test import Client
    from django.urls import reverse

    web = Client()
    web.force_login(owner)
    sig = failed(owner, {"task": "examples.fail", "kwargs": {"message": "wrong path", "times": 5}})
    page = web.get(reverse("task_retry", args=[sig.pk])).content.decode()
    assert 'name="kw_message" value="wrong path"' in page and 'name="kw_times" value="5"' in page

    bad = web.post(reverse("task_retry", args=[sig.pk]), {"kw_message": "x", "kw_times": "many"})
    assert bad.status_code == 400 and fresh(sig).kwargs == {"message": "wrong path", "times": 5}

    done = web.post(reverse("task_retry", args=[sig.pk]), {"kw_message": "right path", "kw_times": "0"})
    assert done.status_code == 302
    drain()
    sig = fresh(sig)
    assert (sig.status, sig.result, sig.kwargs) == (Status.COMPLETED, "ok", {"message": "right path", "times": 0})


def test_the_canvas_handle_skips_and_retries(owner):
    from tasks_app.canvas import Handle

    task = Handle(failed(owner, {"task": "examples.fail"}))
    task.retry(kwargs={"times": 0})
    drain()
    assert (task.status, task.result) == (Status.COMPLETED, "ok")

    chain = failed(owner, {"kind": "chain", "steps": [{"task": "examples.fail"}, {"task": "examples.double"}]})
    Handle(chain.members.get(position=0)).skip(result=4)
    drain()
    assert Handle(chain).result == 8
