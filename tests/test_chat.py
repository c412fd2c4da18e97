"""Chat: the deterministic parser answers about, and acts on, the user's own tasks, and never raises."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import include, path
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks_app.models import ApprovalStatus, Event, Signature, Status, Step, StepStatus
from tasks_app.services import chat, execution
from tests.drain import drain

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]
urlpatterns = [path("api/", include("tasks_app.api.live"))]


def crm(owner, **kwargs) -> Signature:
    return execution.submit({"task": "examples.build_crm", "kwargs": {"seconds_per_item": 0, **kwargs}}, owner=owner)


def finished(sig: Signature) -> Signature:
    drain()
    sig.refresh_from_db()
    return sig


def in_step_two(owner) -> Signature:
    """The seed's picture: step 1 done, two of step 2's four substeps done, 65% overall."""
    sig = crm(owner)
    execution.claim(sig.pk, 1)
    now = timezone.now()
    Step.objects.filter(signature=sig, order=1).update(status=StepStatus.COMPLETED, progress=100,
                                                      started_at=now - dt.timedelta(minutes=6), finished_at=now)
    Step.objects.filter(signature=sig, order=2).update(
        status=StepStatus.RUNNING, progress=50, started_at=now,
        substeps=[{"name": n, "done": i < 2} for i, n in
                  enumerate(["Customer list view", "Product list view", "Sales form", "Repair board"])])
    # 65% after 334 s: the rate extrapolation gives 334 × 35 / 65 ≈ 180 s left.
    Signature.objects.filter(pk=sig.pk).update(progress=65, started_at=now - dt.timedelta(seconds=334))
    return sig


def ask(user, message: str) -> chat.Answer:
    answer = chat.reply(user, message)
    assert isinstance(answer.reply, str) and answer.reply
    return answer


# Progress ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("question", ["How's my CRM task going?", "status of my CRM task", "crm status?"])
def test_progress_reads_like_the_seed(owner, question):
    sig = in_step_two(owner)
    answer = ask(owner, question)
    assert (answer.action, answer.task_id) == ("progress", sig.pk)
    assert answer.reply == (
        "📊 Your Cellphone Store CRM task is 65% complete.\n"
        "Currently: Generate application UI\n"
        "- ✓ Customer list view\n"
        "- ✓ Product list view\n"
        "- ⏳ Sales form (in progress)\n"
        "- ⏳ Repair board\n"
        "ETA: About 3 minutes remaining."
    )


def test_words_of_the_title_or_task_name_find_the_task_most_recent_first(owner, stranger):
    older = crm(owner)
    imports = execution.submit({"task": "examples.sleep", "name": "Nightly imports", "kwargs": {"seconds": 5}},
                               owner=owner)
    newer = crm(owner)
    crm(stranger)
    assert ask(owner, "How's my CRM task going?").task_id == newer.pk
    assert ask(owner, "how is the build_crm job doing").task_id == newer.pk
    assert ask(owner, "status of my nightly imports").task_id == imports.pk
    assert ask(owner, f"how is task #{older.pk} going?").task_id == older.pk
    assert ask(stranger, "How's my nightly task going?").action == "not_found"


def test_no_matching_task_is_said_plainly(owner, stranger):
    crm(owner)
    missing = ask(owner, "How's my banana task going?")
    assert missing.action == "not_found" and "banana" in missing.reply and missing.task_id is None
    assert ask(stranger, "How's my CRM task going?").reply.startswith("You have no tasks yet")
    assert ask(owner, "How is task #999999 going?").action == "not_found"


def test_finished_failed_and_waiting_tasks_say_so(owner):
    assert ask(owner, f"status of #{finished(crm(owner)).pk}").reply == "✅ Your Cellphone Store CRM task is complete."
    failed = finished(execution.submit({"task": "examples.fail", "kwargs": {"message": "disk full"}}, owner=owner))
    assert "❌ Your examples.fail task failed." in ask(owner, f"status of #{failed.pk}").reply
    waiting = finished(crm(owner, approval=True))
    reply = ask(owner, f"how's #{waiting.pk} going").reply
    assert reply.startswith("⚠️ Your Cellphone Store CRM task waits for your approval: Configure workflows of")
    assert "'approve my CRM task'" in reply


def test_logs_show_the_last_lines(owner):
    sig = finished(crm(owner))
    answer = ask(owner, "show logs for my CRM task")
    assert (answer.action, answer.task_id) == ("logs", sig.pk)
    assert answer.reply.splitlines()[0].startswith("📜 Last 4 log lines of your Cellphone Store CRM task")
    assert answer.reply.splitlines()[-1].endswith("INFO    Cellphone Store CRM: Configure workflows")


def test_list_my_tasks(owner):
    sig = crm(owner)
    answer = ask(owner, "list my tasks")
    assert answer.action == "list" and f"#{sig.pk} Cellphone Store CRM — queued, 0%" in answer.reply


# Actions -----------------------------------------------------------------------------------------


def test_pause_and_continue(owner):
    sig = crm(owner)
    assert ask(owner, "pause my CRM task").action == "pause"
    sig.refresh_from_db()
    assert sig.status == Status.PAUSED
    assert Event.objects.filter(signature=sig, type="paused", actor="chat:owner").exists()
    assert ask(owner, "continue my CRM task").action == "resume"
    sig.refresh_from_db()
    assert sig.status == Status.QUEUED


def test_an_action_the_status_forbids_is_explained(owner):
    sig = finished(crm(owner))
    answer = ask(owner, "pause my CRM task")
    assert answer.action is None and answer.reply.startswith(f"I can't pause your Cellphone Store CRM task (#{sig.pk})")


def test_cancel_asks_first_and_only_the_confirmation_cancels(owner):
    sig = crm(owner)
    asked = ask(owner, "cancel my CRM task")
    assert (asked.action, asked.task_id) == ("confirm_cancel", sig.pk)
    assert f"Reply 'yes, cancel #{sig.pk}' to confirm." in asked.reply
    assert Signature.objects.filter(pk=sig.pk).exists()
    done = ask(owner, f"yes, cancel #{sig.pk}")
    assert done.action == "cancel" and not Signature.objects.filter(pk=sig.pk).exists()
    assert Event.objects.get(signature_ref=sig.pk, type="cancelled").actor == "chat:owner"
    assert ask(owner, f"yes, cancel #{sig.pk}").action == "not_found"


def test_nobody_confirms_a_cancel_of_someone_elses_task(owner, stranger):
    sig = crm(owner)
    assert ask(stranger, f"yes, cancel #{sig.pk}").action == "not_found"
    assert Signature.objects.filter(pk=sig.pk).exists()


def test_cancel_and_start_over_submits_the_same_spec_again(owner):
    sig = crm(owner, title="Phone Shop CRM")
    asked = ask(owner, "Cancel my CRM task and start over")
    assert asked.action == "confirm_cancel"
    assert f"Reply 'yes, cancel #{sig.pk} and start over' to confirm." in asked.reply
    done = ask(owner, f"Yes, cancel #{sig.pk} and start over")
    assert done.action == "restart" and done.task_id != sig.pk
    again = Signature.objects.get(pk=done.task_id)
    assert (again.task_name, again.kwargs, again.status) == (sig.task_name, sig.kwargs, Status.QUEUED)
    assert not Signature.objects.filter(pk=sig.pk).exists()


def test_retry_a_failed_task_and_run_a_finished_one_again(owner):
    failed = finished(execution.submit({"task": "examples.fail", "kwargs": {"times": 1}}, owner=owner))
    assert ask(owner, "retry my fail task").action == "retry"
    assert finished(failed).status == Status.COMPLETED
    assert ask(owner, "retry my fail task").action == "rerun"
    failed.refresh_from_db()
    assert failed.status == Status.QUEUED


@pytest.mark.parametrize(("message", "decision", "action"), [
    ("approve my CRM task", ApprovalStatus.APPROVED, "approve"),
    ("reject my CRM task", ApprovalStatus.REJECTED, "reject"),
])
def test_approve_or_reject_a_waiting_task(owner, message, decision, action):
    sig = finished(crm(owner, approval=True))
    assert ask(owner, message).action == action
    approval = sig.approvals.get()
    assert (approval.status, approval.decided_by) == (decision, "chat:owner")
    assert ask(owner, message).reply.endswith("is not waiting for an approval.")


# Anything else -----------------------------------------------------------------------------------


@pytest.mark.parametrize("message", ["hello", "what's the weather like?", "help", ""])
def test_an_unmatched_message_gets_the_list_of_what_is_understood(owner, message):
    answer = ask(owner, message)
    assert answer.action == "help" and "How's my CRM task going?" in answer.reply


@pytest.mark.parametrize("message", [
    None, 42, {"message": "hi"}, "#" + "9" * 40, "yes, cancel #", "x" * 50_000, "\x00\ud800", "cancel " * 500,
    "🙂" * 100, "pause #0", "task 12345678901234567890",
])
def test_odd_input_never_raises(owner, message):
    crm(owner)
    assert isinstance(chat.reply(owner, message).reply, str)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_any_text_gets_an_answer(owner, text):
    answer = chat.reply(owner, text)
    assert isinstance(answer.reply, str) and answer.reply


def test_a_failing_service_becomes_an_apology(owner, monkeypatch):
    crm(owner)
    monkeypatch.setattr(chat.progress, "payload", lambda sig: 1 / 0)
    answer = ask(owner, "How's my CRM task going?")
    assert answer.action == "error" and "ZeroDivisionError" in answer.reply


# The HTTP API ------------------------------------------------------------------------------------


def test_post_chat_answers_with_reply_action_and_task(owner_client, owner):
    sig = in_step_two(owner)
    answer = owner_client.post("/api/chat/", {"message": "How's my CRM task going?"}, format="json")
    assert answer.status_code == 200
    body = answer.json()
    assert body["reply"].startswith("📊 Your Cellphone Store CRM task is 65% complete.")
    assert (body["action"], body["task_id"]) == ("progress", sig.pk)


@pytest.mark.parametrize(("body", "status", "field"), [({}, 400, "message"), ({"message": 7}, 400, "message"),
                                                       ({"message": ""}, 400, "message"), ([1], 400, "body"),
                                                       ({"message": "x" * 2001}, 413, None)])
def test_bad_chat_requests(owner_client, body, status, field):
    answer = owner_client.post("/api/chat/", body, format="json")
    assert answer.status_code == status
    data = answer.json()
    assert data["detail"] and data["code"]
    if field:
        assert field in data["errors"]


def test_chat_needs_a_signed_in_user(api_client):
    assert api_client.post("/api/chat/", {"message": "hi"}, format="json").status_code in (401, 403)
