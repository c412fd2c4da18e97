"""Skip, modify-and-retry and retry from the failed step end to end: real `manage.py worker`
processes, a real Redis and the test database, driven through the API as a user would."""

from __future__ import annotations

import pytest

from tasks_app.models import Event, Run, Status, StepStatus

from .api_helpers import fresh, submitted, url

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SUBSTEPS = ["Customer list view", "Product list view", "Sales form", "Repair board"]


def crm(fail_step: str, **extra) -> dict:
    return {"task": "examples.build_crm", "kwargs": {"seconds_per_item": 0.05, "fail_step": fail_step, **extra}}


def failed_on_workers(client, workers, spec: dict):
    sig = submitted(client, spec)
    workers.burst()
    sig = fresh(sig)
    assert sig.status == Status.FAILED, sig.error
    return sig


def completions(sig) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in Event.objects.filter(signature_ref=sig.pk, type="step_completed"):
        counts[event.data["name"]] = counts.get(event.data["name"], 0) + 1
    return counts


def test_retry_resumes_from_the_failed_step_on_real_workers(owner_client, workers):
    sig = failed_on_workers(owner_client, workers, crm("Generate application UI"))
    assert sig.error["message"].startswith("Generate application UI failed")

    assert owner_client.post(url(sig, "retry")).status_code == 200
    workers.burst()

    sig = fresh(sig)
    assert sig.status == Status.COMPLETED
    # The substep the failure interrupted ran twice; the completed step and the rest once.
    assert sig.result["executed"] == {"Create database tables": 1, "Customer list view": 2, "Product list view": 1,
                                      "Sales form": 1, "Repair board": 1, "Add search and filters": 1,
                                      "Configure workflows": 1}
    assert completions(sig) == dict.fromkeys(
        ["Create database tables", "Generate application UI", "Add search and filters", "Configure workflows"], 1)
    assert [r.attempt for r in Run.objects.filter(signature=sig).order_by("number")] == [1, 2]


def test_retry_from_start_with_new_arguments_on_real_workers(owner_client, workers):
    sig = failed_on_workers(owner_client, workers, crm("Add search and filters"))

    response = owner_client.post(url(sig, "retry"), {"from_start": True,
                                                     "kwargs": {"title": "Repair Shop CRM", "seconds_per_item": 0.05}},
                                 format="json")

    assert response.status_code == 200, response.json()
    workers.burst()
    sig = fresh(sig)
    assert (sig.status, sig.result["title"]) == (Status.COMPLETED, "Repair Shop CRM")
    assert set(sig.result["executed"].values()) == {1}  # a fresh checkpoint: every item once in this attempt
    assert completions(sig) == {"Create database tables": 2, "Generate application UI": 2,
                                "Add search and filters": 1, "Configure workflows": 1}
    retried = Event.objects.get(signature_ref=sig.pk, type="retried").data
    assert retried["old_kwargs"]["fail_step"] == "Add search and filters" and "fail_step" not in retried["new_kwargs"]


def test_skip_a_step_and_a_chain_member_on_real_workers(owner_client, workers):
    task = failed_on_workers(owner_client, workers, crm("Add search and filters"))
    chain = failed_on_workers(owner_client, workers, {"kind": "chain", "steps": [
        {"task": "examples.echo", "kwargs": {"value": 1}}, {"task": "examples.fail"}, {"task": "examples.double"}]})

    assert owner_client.post(url(task, "skip")).status_code == 200
    member = chain.members.get(position=1)
    assert owner_client.post(url(member, "skip"), {"result": 50}, format="json").status_code == 200
    workers.burst()

    task, chain = fresh(task), fresh(chain)
    assert task.status == Status.COMPLETED
    assert task.steps.get(name="Add search and filters").status == StepStatus.SKIPPED
    assert task.result["executed"] == {"Create database tables": 1, **dict.fromkeys(SUBSTEPS, 1),
                                       "Add search and filters": 1, "Configure workflows": 1}
    assert (chain.status, chain.result, fresh(member).status) == (Status.COMPLETED, 100, Status.SKIPPED)
