"""The Django admin: pages load, actions go through the services, cancel asks first, tasks can be run."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from tasks_app.models import (
    Event,
    LogEntry,
    Priority,
    ResumeReport,
    Run,
    Signature,
    Status,
    Step,
    StepStatus,
    WorkerProcess,
)
from tasks_app.services import deletion, execution
from tests.drain import drain

pytestmark = pytest.mark.django_db
CHANGELIST = "admin:tasks_app_signature_changelist"


def change_url(sig: Signature) -> str:
    return reverse("admin:tasks_app_signature_change", args=[sig.pk])


def pending(owner, spec: dict | None = None) -> Signature:
    return execution.submit(spec or {"task": "examples.echo", "kwargs": {"value": 1}}, owner=owner, run=False)


def act(client, action: str, *sigs: Signature, **extra):
    data = {"action": action, "_selected_action": [s.pk for s in sigs], **extra}
    return client.post(reverse(CHANGELIST), data, follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def workflow(admin_user) -> Signature:
    """A completed chain with runs, steps, events and logs below it."""
    chain = execution.submit(
        {
            "kind": "chain",
            "name": "nightly",
            "steps": [{"task": "examples.log", "kwargs": {"lines": 60}}, {"task": "examples.noop"}],
        },
        owner=admin_user,
    )
    drain()
    chain.refresh_from_db()
    return chain


# Pages ------------------------------------------------------------------------------------------


def test_signature_changelist_filters_and_search_load(admin_client, workflow):
    url = reverse(CHANGELIST)
    for query in [
        "",
        "?status=completed",
        "?kind=chain",
        "?task_name=examples.noop",
        "?priority=medium",
        "?category=examples",
        "?deletion=live",
        "?deletion=marked",
        "?place=top",
        "?place=member",
        "?q=nightly",
        f"?q={workflow.pk}",
        "?q=examples.log",
        f"?parent__id__exact={workflow.pk}",
    ]:
        response = admin_client.get(url + query)
        assert response.status_code == 200, query
    response = admin_client.get(url + "?q=nightly")
    assert list(response.context["cl"].result_list) == [workflow]
    assert "Run a task" in admin_client.get(url).content.decode()


def test_deletion_filter_separates_marked_signatures(admin_client, admin_user):
    live, marked = pending(admin_user), pending(admin_user)
    deletion.delete(marked, actor="test")
    response = admin_client.get(reverse(CHANGELIST) + "?deletion=marked")
    assert list(response.context["cl"].result_list) == [marked]
    response = admin_client.get(reverse(CHANGELIST) + "?deletion=live")
    assert list(response.context["cl"].result_list) == [live]


def test_change_page_shows_progress_members_and_the_latest_logs(admin_client, workflow):
    response = admin_client.get(change_url(workflow))
    page = response.content.decode()
    assert response.status_code == 200
    assert "✓ 1. examples.log" in page and "examples.noop" in page and "full log of the tree" in page
    member = workflow.members.get(position=0)
    response = admin_client.get(change_url(member))
    assert response.status_code == 200
    logs = response.context["inline_admin_formsets"][-1].formset
    assert member.logs.count() == 60 and len(logs.forms) == 50
    assert logs.forms[-1].instance == member.logs.order_by("at", "id").last()


def test_change_page_buttons_follow_the_status(admin_client, admin_user):
    sig = pending(admin_user)
    page = admin_client.get(change_url(sig)).content.decode()
    assert ">Pause<" in page and ">Cancel…<" in page and ">Retry<" not in page and ">Restore<" not in page


def test_machine_written_models_are_read_only(admin_client, workflow):
    ResumeReport.objects.create(trigger="manual", resumed=[{"task_id": workflow.pk}], skipped=[], failures=[])
    WorkerProcess.objects.create(name="w1", hostname="h", pid=1)
    for model in (Run, Event, LogEntry, ResumeReport, WorkerProcess):
        name = model._meta.model_name
        assert admin_client.get(reverse(f"admin:tasks_app_{name}_changelist")).status_code == 200, name
        row = model.objects.first()
        assert admin_client.get(reverse(f"admin:tasks_app_{name}_change", args=[row.pk])).status_code == 200, name
        assert admin_client.get(reverse(f"admin:tasks_app_{name}_add")).status_code == 403, name
    page = admin_client.get(reverse("admin:tasks_app_resumereport_changelist")).content.decode()
    assert "manual" in page and '<td class="field-resumed_count">1</td>' in page
    assert admin_client.get(reverse("admin:tasks_app_logentry_changelist") + "?min_level=30&q=line").status_code == 200


def test_signatures_cannot_be_deleted_the_django_way(admin_client, admin_user):
    sig = pending(admin_user)
    assert admin_client.get(reverse("admin:tasks_app_signature_delete", args=[sig.pk])).status_code == 403
    response = admin_client.get(reverse(CHANGELIST))
    actions = [name for name, _ in response.context["action_form"].fields["action"].choices]
    assert "delete_selected" not in actions and "soft_delete_selected" in actions and "cancel_selected" in actions


# Actions ----------------------------------------------------------------------------------------


def test_pause_and_resume_actions_call_the_services(admin_client, admin_user):
    sig = execution.submit({"task": "examples.echo", "kwargs": {"value": 1}}, owner=admin_user)
    response = act(admin_client, "pause_selected", sig)
    sig.refresh_from_db()
    assert sig.status == Status.PAUSED and f"Paused: #{sig.pk}." in messages_of(response)
    assert Event.objects.filter(signature=sig, type="paused", actor="admin").exists()
    act(admin_client, "resume_selected", sig)
    sig.refresh_from_db()
    assert sig.status == Status.QUEUED


def test_an_action_reports_each_refusal(admin_client, admin_user, workflow):
    waiting = pending(admin_user)
    response = act(admin_client, "pause_selected", waiting, workflow)
    notes = messages_of(response)
    assert f"Paused: #{waiting.pk}." in notes
    assert any(n.startswith(f"Not paused: #{workflow.pk} nightly: cannot pause a completed") for n in notes)
    workflow.refresh_from_db()
    assert workflow.status == Status.COMPLETED


def test_soft_delete_restore_and_rerun(admin_client, workflow):
    act(admin_client, "soft_delete_selected", workflow)
    workflow.refresh_from_db()
    assert workflow.deletion is not None
    act(admin_client, "restore_selected", workflow)
    act(admin_client, "rerun_selected", workflow)
    workflow.refresh_from_db()
    assert workflow.deletion is None and workflow.status == Status.RUNNING


def test_interrupt_and_retry(admin_client, admin_user):
    sig = execution.submit({"task": "examples.echo", "kwargs": {"value": 1}}, owner=admin_user)
    act(admin_client, "interrupt_selected", sig)
    sig.refresh_from_db()
    assert sig.status == Status.INTERRUPTED
    act(admin_client, "retry_selected", sig)
    drain()
    sig.refresh_from_db()
    assert (sig.status, sig.result) == (Status.COMPLETED, 1)


def test_cancel_asks_for_confirmation_first(admin_client, workflow):
    response = act(admin_client, "cancel_selected", workflow)
    page = response.content.decode()
    assert response.status_code == 200 and "What will be deleted" in page
    assert "2 signatures below it" in page and "60 log lines" in page
    assert Signature.objects.filter(pk=workflow.pk).exists()
    response = act(admin_client, "cancel_selected", workflow, post="yes")
    assert not Signature.objects.exists() and f"Cancelled: #{workflow.pk}." in messages_of(response)
    assert Event.objects.get(type="cancelled").signature_ref == workflow.pk


def test_change_page_button_runs_one_action(admin_client, admin_user):
    sig = pending(admin_user)
    url = reverse("admin:tasks_app_signature_act", args=[sig.pk, "pause_selected"])
    assert admin_client.get(url).status_code == 405
    response = admin_client.post(url)
    sig.refresh_from_db()
    assert response.status_code == 302 and response["Location"] == change_url(sig) and sig.status == Status.PAUSED
    cancel = reverse("admin:tasks_app_signature_act", args=[sig.pk, "cancel_selected"])
    assert "What will be deleted" in admin_client.post(cancel).content.decode()
    response = admin_client.post(cancel, {"post": "yes"})
    assert response["Location"] == reverse(CHANGELIST) and not Signature.objects.exists()


def test_priority_change_goes_through_the_service(admin_client, admin_user):
    sig = pending(admin_user)
    form = {"name": "renamed", "priority": Priority.HIGH, "category": "ops", "tags": '["a"]'}
    for prefix in ("steps", "runs", "events", "logs"):
        form |= {f"{prefix}-TOTAL_FORMS": 0, f"{prefix}-INITIAL_FORMS": 0}
    response = admin_client.post(change_url(sig), form)
    assert response.status_code == 302
    sig.refresh_from_db()
    assert (sig.name, sig.priority, sig.category, sig.tags, sig.status) == ("renamed", "high", "ops", ["a"], "pending")
    assert Event.objects.filter(signature=sig, type="priority_changed", actor="admin").exists()


# Running a registered task ----------------------------------------------------------------------


def test_run_a_task_form_lists_the_registry(admin_client):
    page = admin_client.get(reverse("admin:tasks_app_signature_add")).content.decode()
    assert "Registered tasks" in page and "examples.build_crm" in page and "seconds_per_item" in page


def test_run_a_task_submits_and_redirects_to_its_page(admin_client, admin_user):
    data = {"task": "examples.sleep", "kwargs": '{"seconds": 1}', "priority": "low", "name": "nap"}
    response = admin_client.post(reverse("admin:tasks_app_signature_add"), data)
    sig = Signature.objects.get()
    assert response.status_code == 302 and response["Location"] == change_url(sig)
    assert (sig.task_name, sig.name, sig.priority, sig.owner, sig.status) == (
        "examples.sleep",
        "nap",
        "low",
        admin_user,
        Status.QUEUED,
    )


def test_run_a_task_shows_bad_arguments_next_to_the_field(admin_client):
    url = reverse("admin:tasks_app_signature_add")
    response = admin_client.post(url, {"task": "examples.sleep", "kwargs": "{}"})
    assert response.status_code == 200 and "seconds: this argument is required" in response.content.decode()
    response = admin_client.post(url, {"task": "examples.sleep", "kwargs": "{seconds: 1"})
    assert response.status_code == 200 and response.context["form"].errors["kwargs"]
    response = admin_client.post(url, {"task": "examples.sleep", "kwargs": "[1]"})
    assert "must be a JSON object" in response.content.decode()
    assert not Signature.objects.exists()


def test_approval_actions_decide_a_waiting_task(admin_client, admin_user):
    sig = execution.submit(
        {"task": "examples.build_crm", "kwargs": {"seconds_per_item": 0, "approval": True}}, owner=admin_user
    )
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.WAITING_APPROVAL
    assert sig.steps.filter(status=StepStatus.APPROVAL).exists()
    page = admin_client.get(change_url(sig)).content.decode()
    assert ">Approve<" in page and "⚠ Waiting for approval" in page and "manage.py" not in page
    approvals = admin_client.get(reverse("admin:tasks_app_approval_changelist")).content.decode()
    assert "Configure workflows of Cellphone Store CRM?" in approvals
    act(admin_client, "approve_selected", sig)
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.COMPLETED and Step.objects.filter(signature=sig, status="completed").count() == 4


@pytest.mark.parametrize("deep", ["[" * 100_000, "[" * 100_000 + "]" * 100_000])
def test_json_nested_deeper_than_python_can_read_is_a_form_error(admin_client, admin_user, deep):
    """Not a 500: the field says what is wrong, and the page keeps what was typed."""
    url = reverse("admin:tasks_app_signature_add")
    response = admin_client.post(url, {"task": "examples.sleep", "kwargs": deep})
    assert response.status_code == 200 and "nested too deeply" in str(response.context["form"].errors["kwargs"])
    assert not Signature.objects.exists()

    sig = Signature.objects.create(owner=admin_user, task_name="examples.noop", tags=["a"])
    response = admin_client.post(change_url(sig), {"name": "x", "priority": "medium", "category": "", "tags": deep})
    assert response.status_code == 200
    assert "nested too deeply" in str(response.context["adminform"].form.errors["tags"])
    sig.refresh_from_db()
    assert sig.tags == ["a"]
