"""Chat: a deterministic parser (no language model) that answers about, and acts on, the user's own tasks.

A message is read for an intent (keywords, checked in order) and a task: ``#12``, or words of its title
or task name ("my CRM task" finds "Cellphone Store CRM" and ``examples.build_crm``), the most recent
match first; with no words, the most recent task. Cancelling asks for a confirmation that names the
task (``yes, cancel #12``), so the confirmation itself carries everything and nothing is kept between
messages. ``reply`` never raises: any input, and any failure of a service, becomes a sentence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..models import Approval, ApprovalStatus, Kind, Signature, Status, StepStatus
from . import approvals, execution, lifecycle, logs, progress, tree
from .errors import OrchestratorError
from .notifications import display_name, failed_step

log = logging.getLogger(__name__)

MAX_MESSAGE = 2000
CANDIDATES = 200  # the user's most recent top-level tasks that names are matched against
LOG_LINES = 10
MAX_LIST_LINES = 10
SYMBOLS = {StepStatus.COMPLETED: "✓", StepStatus.FAILED: "✕", StepStatus.SKIPPED: "⊘", StepStatus.PAUSED: "⏸",
           StepStatus.APPROVAL: "⚠"}
STATUS_SYMBOLS = {Status.PENDING: "○", Status.QUEUED: "○", Status.RUNNING: "◐", Status.PAUSED: "⏸",
                  Status.WAITING_APPROVAL: "⚠", Status.COMPLETED: "✓", Status.FAILED: "✕",
                  Status.INTERRUPTED: "⚠", Status.SKIPPED: "⊘"}

CONFIRM = re.compile(
    r"^\W*(?:yes|yep|y|confirm(?:ed)?|ok(?:ay)?)\W+cancel\s+#?(\d{1,18})(\s+and\s+start\s+over)?\b", re.I
)
INTENTS: list[tuple[str, re.Pattern]] = [
    (name, re.compile(pattern, re.I))
    for name, pattern in [
        ("help", r"^\W*(?:help|what can you do|commands)\W*$"),
        ("restart", r"\b(?:cancel|abort|stop)\b.*\b(?:start(?:ing)? (?:it )?over|start (?:it )?again|restart)\b"),
        ("cancel", r"\b(?:cancel|abort)\b"),
        ("logs", r"\b(?:logs?|output)\b"),
        ("approve", r"\b(?:approve|go ahead)\b"),
        ("reject", r"\b(?:reject|deny|decline)\b"),
        ("skip", r"\bskip\b"),
        ("pause", r"\b(?:pause|hold)\b"),
        ("resume", r"\b(?:continue|resume|unpause|carry on)\b"),
        ("retry", r"\b(?:retry|rerun|re-run|run (?:it )?again|try again)\b"),
        ("list", r"\b(?:list|which|all)\b.*\btasks\b|\bmy tasks\b"),
        ("progress", r"\b(?:how|status|progress|going|eta|done|finished|doing|where|when|state)\b"),
    ]
]
STOPWORDS = set(
    """a about again ahead all an and any are at be been can check complete continue could current currently
    decline deny did do does doing done eta finished for from get give go going has have hello hey hi hold how
    hows i in is it its job jobs last latest left let list log logs long lines look me much my now of ok okay on
    out output over pause please progress re reject remaining restart resume retry rerun run s see show some
    skip start state status stop task tasks tell that the there this to try unpause up was what whats when where
    which will with workflow workflows would yet you approve cancel abort carry thanks quick running""".split()
)
HELP = (
    "I can help with your tasks. Try:\n"
    "- \"How's my CRM task going?\" or \"status of my CRM task\"\n"
    "- \"Show logs for my CRM task\"\n"
    "- \"Pause my CRM task\" / \"Continue my CRM task\"\n"
    "- \"Retry my CRM task\"\n"
    "- \"Skip it\" (go on past the failed step, or the failed member of a chain or graph)\n"
    "- \"Approve my CRM task\" / \"Reject my CRM task\"\n"
    "- \"Cancel my CRM task\" (asks you to confirm) or \"Cancel my CRM task and start over\"\n"
    "- \"List my tasks\"\n"
    "Name a task by words of its title or task name, or by its number (#12)."
)


@dataclass(frozen=True)
class Answer:
    reply: str
    action: str | None = None
    task_id: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def reply(user, message: object) -> Answer:
    """The answer to one chat message of ``user``; never raises."""
    text = message[:MAX_MESSAGE] if isinstance(message, str) else ""
    try:
        return _reply(user, text)
    except Exception as exc:  # a chat answer must always come back
        log.exception("chat message not handled: %r", text[:200])
        return Answer(f"Sorry, I could not handle that ({type(exc).__name__}). Say 'help' to see what I understand.",
                      action="error")


def _reply(user, text: str) -> Answer:
    confirmation = CONFIRM.search(text)
    if confirmation:
        return confirm_cancel(user, int(confirmation.group(1)), restart=bool(confirmation.group(2)))
    intent = intent_of(text)
    if intent == "help":
        return Answer(HELP, action="help")
    if intent is None:
        return Answer(f"Sorry, I didn't understand that.\n\n{HELP}", action="help")
    if intent == "list":
        return list_tasks(user)
    sig, problem = find_task(user, text, prefer_active=intent in ("progress", "pause", "approve", "reject"))
    if sig is None:
        return problem
    return HANDLERS[intent](user, sig)


def intent_of(text: str) -> str | None:
    return next((name for name, pattern in INTENTS if pattern.search(text)), None)


# Finding the task -----------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def find_task(user, text: str, *, prefer_active: bool) -> tuple[Signature | None, Answer | None]:
    """The task the message names (``#12`` or title words), else the user's most recent one."""
    number = re.search(r"(?:#|\btask\s+(?:number\s+)?)(\d{1,18})\b", text, re.I)
    if number:
        sig = Signature.objects.filter(owner=user, pk=int(number.group(1))).first()
        return (sig, None) if sig else (None, Answer(f"You have no task #{number.group(1)}.", action="not_found"))
    mine = list(Signature.objects.filter(owner=user).top_level().live()[:CANDIDATES])
    if not mine:
        return None, Answer("You have no tasks yet. Start one from the “New task” page or with POST /api/tasks/.",
                            action="not_found")
    wanted = [w for w in words(text) if w not in STOPWORDS]
    if not wanted:
        active = [s for s in mine if s.status in (Status.RUNNING, Status.WAITING_APPROVAL, Status.QUEUED)]
        return (active[0] if prefer_active and active else mine[0]), None
    best = best_match(mine, wanted)
    if best is None:
        recent = ", ".join(f"#{s.pk} {display_name(s)}" for s in mine[:5])
        text = f"I couldn't find a task of yours matching “{' '.join(wanted)}”. Your recent tasks: {recent}."
        return None, Answer(text, action="not_found")
    return best, None


def best_match(candidates: list[Signature], wanted: list[str]) -> Signature | None:
    """The candidate matching the most wanted words; the most recent among equals (candidates are newest first)."""
    best, best_score = None, 0
    for sig in candidates:
        known = _name_words(sig)
        score = sum(1 for w in wanted if any(_same_word(w, k) for k in known))
        if score > best_score:
            best, best_score = sig, score
    return best


def _name_words(sig: Signature) -> set[str]:
    tags = " ".join(t for t in sig.tags if isinstance(t, str)) if isinstance(sig.tags, list) else ""
    return set(words(f"{display_name(sig)} {sig.name} {sig.task_name.replace('_', ' ')} {sig.category} {tags}"))


def _same_word(wanted: str, known: str) -> bool:
    if wanted == known or wanted.rstrip("s") == known.rstrip("s"):
        return True
    return len(wanted) >= 3 and known.startswith(wanted)


# Answers --------------------------------------------------------------------------------------


def describe(user, sig: Signature) -> Answer:
    data = progress.payload(sig)
    name, percent = display_name(sig), int(round(data["progress"]))
    text = {
        Status.COMPLETED: lambda: f"✅ Your {name} task is complete.",
        Status.FAILED: lambda: _failure_text(sig),
        Status.WAITING_APPROVAL: lambda: _approval_text(sig),
        Status.PAUSED: lambda: f"⏸ Your {name} task is paused at {percent}%. "
                               f"Say 'continue my {_short(sig)} task' to resume it.",
        Status.INTERRUPTED: lambda: f"⚠ Your {name} task was interrupted at {percent}%. "
                                    f"Say 'continue my {_short(sig)} task' to resume it from its last checkpoint.",
        Status.SKIPPED: lambda: f"⊘ Your {name} task was skipped.",
        Status.PENDING: lambda: f"○ Your {name} task has not started yet.",
        Status.QUEUED: lambda: f"⏳ Your {name} task is queued and waits for a worker.",
    }.get(sig.status, lambda: _running_text(name, percent, data))()
    return Answer(text, action="progress", task_id=sig.pk)


def _running_text(name: str, percent: int, data: dict) -> str:
    lines = [f"📊 Your {name} task is {percent}% complete."]
    current = next((s for s in data["steps"] if s["order"] == data["current_step"]), None)
    if current is not None:
        lines.append(f"Currently: {current['name']}")
        lines += _substep_lines(current) if current["substeps"] else _step_lines(data["steps"], current)
    lines.append(f"ETA: {eta_text(data['eta_seconds'])}")
    return "\n".join(lines)


def _substep_lines(step: dict) -> list[str]:
    first_open = next((s["name"] for s in step["substeps"] if not s["done"]), None)
    running = step["status"] == StepStatus.RUNNING
    lines = []
    for sub in step["substeps"]:
        note = " (in progress)" if running and sub["name"] == first_open else ""
        lines.append(f"- ✓ {sub['name']}" if sub["done"] else f"- ⏳ {sub['name']}{note}")
    return lines


def _step_lines(steps: list[dict], current: dict) -> list[str]:
    lines = []
    for step in steps[:MAX_LIST_LINES]:
        symbol = SYMBOLS.get(step["status"], "⏳")
        note = " (in progress)" if step is current and step["status"] == StepStatus.RUNNING else ""
        lines.append(f"- {symbol} {step['name']}{note}")
    if len(steps) > MAX_LIST_LINES:
        lines.append(f"- … and {len(steps) - MAX_LIST_LINES} more")
    return lines


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "not known yet (no earlier runs to compare with)."
    if seconds < 60:
        return "Less than a minute remaining." if seconds < 5 else f"About {round(seconds)} seconds remaining."
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"About {minutes} minute{'s' if minutes != 1 else ''} remaining."
    hours, minutes = divmod(minutes, 60)
    return f"About {hours} h {minutes} min remaining."


def _failure_text(sig: Signature) -> str:
    error = sig.error or {}
    where = failed_step(sig)
    at = f" at Step {where[0]}: {where[1]}" if where else ""
    reason = f"{error.get('type', 'Error')}: {error.get('message', '')}".strip(": ")
    return f"❌ Your {display_name(sig)} task failed{at}.\n{reason}\nSay 'retry my {_short(sig)} task' to run it again."


def _approval_text(sig: Signature) -> str:
    approval = pending_approval(sig)
    what = f": {approval.title}" if approval else ""
    short = _short(sig)
    return (f"⚠️ Your {display_name(sig)} task waits for your approval{what}\n"
            f"Say 'approve my {short} task' or 'reject my {short} task'.")


def _short(sig: Signature) -> str:
    """A name the parser finds the task by again: the last word of its title, or #id."""
    name_words = re.findall(r"[A-Za-z0-9]+", display_name(sig))
    return name_words[-1] if name_words and name_words[-1].lower() not in STOPWORDS else f"#{sig.pk}"


def show_logs(user, sig: Signature) -> Answer:
    entries = list(logs.for_tree(sig).order_by("-at", "-id")[:LOG_LINES])[::-1]
    if not entries:
        return Answer(f"Your {display_name(sig)} task has no log lines yet.", action="logs", task_id=sig.pk)
    lines = [f"{e.at:%H:%M:%S} {e.levelname:<7} {(e.message.splitlines() or [''])[0][:200]}" for e in entries]
    header = f"📜 Last {len(entries)} log lines of your {display_name(sig)} task (#{sig.pk}):"
    return Answer("\n".join([header, *lines]), action="logs", task_id=sig.pk)


def list_tasks(user) -> Answer:
    mine = list(Signature.objects.filter(owner=user).top_level().live()[:MAX_LIST_LINES])
    if not mine:
        return Answer("You have no tasks yet.", action="list")
    lines = [f"{STATUS_SYMBOLS[s.status]} #{s.pk} {display_name(s)} — {s.get_status_display().lower()}, "
             f"{int(round(100 if s.status == Status.COMPLETED else s.progress))}%" for s in mine]
    return Answer("Your most recent tasks:\n" + "\n".join(lines), action="list")


# Actions --------------------------------------------------------------------------------------


def actor_for(user) -> str:
    return f"chat:{user.get_username()}"


def _act(verb: str, sig: Signature, service: Callable[[], object], done: str, action: str) -> Answer:
    """Run a lifecycle service; a status that forbids it becomes an explanation, not an error."""
    try:
        service()
    except OrchestratorError as exc:
        sig.refresh_from_db()
        state = sig.get_status_display().lower()
        return Answer(f"I can't {verb} your {display_name(sig)} task (#{sig.pk}): it is {state}. ({exc})",
                      action=None, task_id=sig.pk)
    return Answer(done, action=action, task_id=sig.pk)


def pause(user, sig: Signature) -> Answer:
    return _act("pause", sig, lambda: lifecycle.pause(sig, actor=actor_for(user)),
                f"⏸ Paused your {display_name(sig)} task (#{sig.pk}). "
                f"Say 'continue my {_short(sig)} task' to resume it.", "pause")


def resume(user, sig: Signature) -> Answer:
    if sig.status == Status.WAITING_APPROVAL:
        return Answer(_approval_text(sig), action="progress", task_id=sig.pk)
    return _act("continue", sig, lambda: lifecycle.resume(sig, actor=actor_for(user)),
                f"▶️ Your {display_name(sig)} task (#{sig.pk}) continues.", "resume")


def retry(user, sig: Signature) -> Answer:
    if sig.status in lifecycle.RETRYABLE:
        return _act("retry", sig, lambda: lifecycle.retry(sig, actor=actor_for(user)),
                    f"🔁 Retrying your {display_name(sig)} task (#{sig.pk}).", "retry")
    return _act("run again", sig, lambda: lifecycle.rerun(sig, actor=actor_for(user)),
                f"🔁 Running your {display_name(sig)} task (#{sig.pk}) again from the start.", "rerun")


def skip(user, sig: Signature) -> Answer:
    """Skip the failure itself, or the failed member of a chain or graph the user named."""
    target = sig if lifecycle.can_skip(sig) else next(
        (m for m in sig.members.filter(status=Status.FAILED).order_by("position") if lifecycle.can_skip(m)), sig)
    if target.pk == sig.pk and target.parent_id is None and sig.kind == Kind.TASK:
        step = sig.steps.filter(status=StepStatus.FAILED).values_list("name", flat=True).first()
        done = f"⏭ Skipped the failed step “{step}” of your {display_name(sig)} task (#{sig.pk}); it goes on."
    else:
        done = (f"⏭ Skipped the failed member #{target.pk} {target.title} of your {display_name(sig)} workflow; "
                "it goes on.")
    return _act("skip", sig, lambda: lifecycle.skip(target, actor=actor_for(user)), done, "skip")


def pending_approval(sig: Signature) -> Approval | None:
    """The oldest pending approval anywhere in the task's tree."""
    ids = tree.subtree(sig).values("pk")
    return (Approval.objects.filter(signature_id__in=ids, status=ApprovalStatus.PENDING)
            .select_related("signature").order_by("created_at", "pk").first())


def decide(user, sig: Signature, *, approve: bool) -> Answer:
    approval = pending_approval(sig)
    if approval is None:
        return Answer(f"Your {display_name(sig)} task (#{sig.pk}) is not waiting for an approval.", task_id=sig.pk)
    verb = "approve" if approve else "reject"
    done = (f"👍 Approved “{approval.title}”. Your {display_name(sig)} task continues." if approve
            else f"👎 Rejected “{approval.title}” for your {display_name(sig)} task.")
    return _act(verb, sig, lambda: approvals.decide(approval.signature, approve=approve, comment="via chat",
                                                    actor=actor_for(user)), done, verb)


def ask_to_cancel(user, sig: Signature, *, restart: bool = False) -> Answer:
    then = " and start it again from scratch" if restart else ""
    phrase = f"yes, cancel #{sig.pk}" + (" and start over" if restart else "")
    return Answer(f"⚠️ Cancelling stops your {display_name(sig)} task (#{sig.pk}) and deletes it with its logs{then}; "
                  f"this cannot be undone.\nReply '{phrase}' to confirm.", action="confirm_cancel", task_id=sig.pk)


def confirm_cancel(user, task_id: int, *, restart: bool) -> Answer:
    sig = Signature.objects.filter(owner=user, pk=task_id).first()
    if sig is None:
        return Answer(f"You have no task #{task_id} (it may be cancelled already).", action="not_found")
    name, spec = display_name(sig), sig.spec
    lifecycle.cancel(sig, confirm=True, actor=actor_for(user))
    if not restart:
        return Answer(f"🛑 Cancelled your {name} task (#{task_id}).", action="cancel", task_id=task_id)
    try:
        new = execution.submit(spec, owner=user, actor=actor_for(user))
    except OrchestratorError as exc:
        return Answer(f"🛑 Cancelled your {name} task (#{task_id}), but could not start it again: {exc}",
                      action="cancel", task_id=task_id)
    return Answer(f"🔁 Cancelled your {name} task (#{task_id}) and started it over as #{new.pk}.",
                  action="restart", task_id=new.pk)


HANDLERS: dict[str, Callable[[object, Signature], Answer]] = {
    "progress": describe,
    "logs": show_logs,
    "pause": pause,
    "resume": resume,
    "retry": retry,
    "skip": skip,
    "approve": lambda user, sig: decide(user, sig, approve=True),
    "reject": lambda user, sig: decide(user, sig, approve=False),
    "cancel": ask_to_cancel,
    "restart": lambda user, sig: ask_to_cancel(user, sig, restart=True),
}
