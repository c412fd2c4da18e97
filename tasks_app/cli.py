"""Terminal rendering shared by the management commands: bars, the progress view, tables, redraws.

Everything here turns service output (``progress.payload``, signatures, log entries) into text; no
function writes to the database.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.management.base import CommandError, DjangoHelpFormatter, OutputWrapper
from django.utils import timezone

from .models import TERMINAL, Kind, Signature, Status, StepStatus
from .services import lifecycle

STEP_SYMBOLS = {
    StepStatus.COMPLETED: "✓",
    StepStatus.RUNNING: "◐",
    StepStatus.PENDING: "○",
    StepStatus.APPROVAL: "⚠",
    StepStatus.FAILED: "✕",
    StepStatus.PAUSED: "⏸",
    StepStatus.SKIPPED: "⊘",
}
STATUS_SYMBOLS = {
    Status.PENDING: "○",
    Status.QUEUED: "○",
    Status.RUNNING: "◐",
    Status.PAUSED: "⏸",
    Status.WAITING_APPROVAL: "⚠",
    Status.COMPLETED: "✓",
    Status.FAILED: "✕",
    Status.INTERRUPTED: "⚠",
    Status.SKIPPED: "⊘",
}
STEP_NOTES = {
    StepStatus.RUNNING: "in progress",
    StepStatus.PENDING: "pending",
    StepStatus.APPROVAL: "waiting for approval",
    StepStatus.FAILED: "failed",
    StepStatus.PAUSED: "paused",
    StepStatus.SKIPPED: "skipped",
}
BAR_WIDTH = 30
BOX_MIN_WIDTH = 64
MAX_STEP_LINES = 25


class HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's option order, with the command's own line breaks kept in ``help``."""


# Look-ups shared by the commands --------------------------------------------------------------


def get_signature(pk: int) -> Signature:
    sig = Signature.objects.filter(pk=pk).first()
    if sig is None:
        raise CommandError(f"no task with id {pk} (it may have been cancelled or purged)", returncode=1)
    return sig


def actor() -> str:
    """Who acts from a terminal, for the audit trail: ``cli:<unix user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = os.environ.get("USER", "") or str(os.getuid())
    return f"cli:{user}"


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    except RecursionError:
        raise CommandError(f"{what} is not valid JSON: nested too deeply to read") from None


def field_errors(errors: dict[str, str], limit: int = 20) -> str:
    """One line per bad field, the way a SpecError names them."""
    lines = [f"  {field}: {problem}" for field, problem in list(errors.items())[:limit]]
    if len(errors) > limit:
        lines.append(f"  ... and {len(errors) - limit} more")
    return "\n".join(lines)


# Small pieces ---------------------------------------------------------------------------------


def bar(percent: float, width: int = BAR_WIDTH) -> str:
    percent = max(0.0, min(100.0, float(percent or 0)))
    filled = int(round(width * percent / 100))
    return f"[{'█' * filled}{'░' * (width - filled)}] {percent:.0f}%"


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min" if minutes >= 10 or not seconds else f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "-"
    seconds = ((now or timezone.now()) - moment).total_seconds()
    return "just now" if seconds < 1 else f"{duration(seconds)} ago"


def eta(seconds: int | None) -> str:
    if seconds is None:
        return "unknown (no history yet)"
    return "less than a second" if seconds == 0 else f"{duration(seconds)} remaining"


def width_of(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def clip(text: str, width: int) -> str:
    if width_of(text) <= width:
        return text
    out = ""
    for ch in text:
        if width_of(out + ch) > width - 1:
            return out + "…"
        out += ch
    return out


def status_label(status: str) -> str:
    return f"{STATUS_SYMBOLS.get(status, '?')} {status}"


def local_time(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def table(headers: list[str], rows: Iterable[list[str]]) -> str:
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max([width_of(h)] + [width_of(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c + " " * (w - width_of(c)) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


# The progress view ----------------------------------------------------------------------------


def progress_line(payload: dict) -> str:
    """One line for ``submit --wait``: bar, percent, current step and ETA."""
    status = payload["status"]
    parts = [bar(payload["progress"], 20), status_label(status)]
    if payload["total_steps"] and payload["current_step_name"]:
        parts.append(f"Step {payload['current_step']} of {payload['total_steps']}: {payload['current_step_name']}")
    if status in (Status.PENDING, Status.QUEUED):
        parts.append("waiting for a worker")
    elif status == Status.RUNNING and payload["eta_seconds"] is not None:
        parts.append(f"ETA {eta(payload['eta_seconds'])}")
    return " · ".join(parts)


def progress_view(payload: dict, sig: Signature, now: datetime | None = None, hints: bool = True) -> str:
    """The seed document's progress view, boxed: title, bar, current step, steps, times and, with
    ``hints``, the ``manage.py control`` commands that apply (the admin has buttons instead)."""
    now = now or timezone.now()
    sections = [
        [payload["title"], _subtitle(sig)],
        [bar(payload["progress"])],
        _current_step(payload),
        _steps(payload),
        _times(payload, now),
        _outcome(sig, hints),
        [_actions(sig)] if hints else [],
    ]
    lines: list[str] = []
    for section in filter(None, sections):
        lines += ([""] if lines else []) + section
    return box(lines)


def _subtitle(sig: Signature) -> str:
    what = sig.task_name if sig.task_name else sig.kind
    deletion = f" · marked for deletion until {local_time(sig.delete_after)}" if sig.delete_after else ""
    return f"#{sig.pk} · {what} · {status_label(sig.status)}{deletion}"


def _current_step(payload: dict) -> list[str]:
    total, status = payload["total_steps"], payload["status"]
    if not total:
        return []
    failed = next((s for s in payload["steps"] if s["status"] == StepStatus.FAILED), None)
    if failed and status in (Status.FAILED, Status.INTERRUPTED):
        return [f"Failed at step {failed['order']} of {total}: {failed['name']}"]
    if payload["current_step_name"] and status not in (Status.COMPLETED, Status.SKIPPED, Status.FAILED):
        return [f"Step {payload['current_step']} of {total}: {payload['current_step_name']}"]
    done = sum(1 for s in payload["steps"] if s["status"] == StepStatus.COMPLETED)
    return [f"{done} of {total} steps completed"]


def _steps(payload: dict) -> list[str]:
    steps = payload["steps"]
    if not steps:
        return []
    shown = steps if len(steps) <= MAX_STEP_LINES else _interesting(steps)
    lines = []
    for step in shown:
        lines.append(_step_line(step))
        if step["substeps"] and step["status"] not in (StepStatus.COMPLETED, StepStatus.PENDING):
            lines += _substep_lines(step)
    hidden = payload["total_steps"] - len(shown)
    if hidden > 0:
        lead = f"… and {hidden} more" if shown else f"{payload['total_steps']} members"
        lines.append(f"{lead}: {_counts(steps)}")
    return lines


def _interesting(steps: list[dict]) -> list[dict]:
    """For long containers: the members that are not simply done or waiting, first ones first."""
    active = [s for s in steps if s["status"] not in (StepStatus.COMPLETED, StepStatus.PENDING, StepStatus.SKIPPED)]
    return active[:MAX_STEP_LINES]


def _counts(steps: list[dict]) -> str:
    counts: dict[str, int] = {}
    for step in steps:
        counts[step["status"]] = counts.get(step["status"], 0) + 1
    return ", ".join(f"{n} {STEP_SYMBOLS[status]}" for status, n in counts.items())


def _step_line(step: dict) -> str:
    status = step["status"]
    symbol = STEP_SYMBOLS.get(status, "?")
    member = f" (#{step['task_id']})" if step.get("task_id") else ""
    note = _step_note(step)
    return f"{symbol} {step['order']}. {step['name']}{member}{note}"


def _step_note(step: dict) -> str:
    status = step["status"]
    if step.get("member_status") == Status.INTERRUPTED:
        return "  (interrupted)"
    if status == StepStatus.COMPLETED:
        return f"  {duration(step['duration_ms'] / 1000)}" if step["duration_ms"] is not None else ""
    if status == StepStatus.RUNNING and step["progress"]:
        return f"  {step['progress']:.0f}%"
    if status in (StepStatus.PENDING, StepStatus.RUNNING):
        return ""
    return f"  ({STEP_NOTES[status]})"


def _substep_lines(step: dict) -> list[str]:
    subs = step["substeps"]
    first_open = next((i for i, s in enumerate(subs) if not s["done"]), None)
    lines = []
    for i, sub in enumerate(subs):
        state = StepStatus.COMPLETED if sub["done"] else StepStatus.PENDING
        if i == first_open and step["status"] != StepStatus.APPROVAL:
            state = step["status"]
        branch = "└─" if i == len(subs) - 1 else "├─"
        note = f" ({STEP_NOTES[state]})" if state != StepStatus.COMPLETED else ""
        lines.append(f"   {branch} {sub['name']} {STEP_SYMBOLS[state]}{note}")
    return lines


def _times(payload: dict, now: datetime) -> list[str]:
    started, finished = payload["started_at"], payload["finished_at"]
    if started is None:
        return ["Not started yet"]
    lines = [f"Started: {ago(started, now)}"]
    if finished is not None and payload["status"] in TERMINAL:
        lines.append(f"Finished: {ago(finished, now)} (took {duration((finished - started).total_seconds())})")
    elif payload["status"] == Status.RUNNING:
        lines.append(f"ETA: {eta(payload['eta_seconds'])}")
    return lines


def _outcome(sig: Signature, hints: bool) -> list[str]:
    def hint(command: str) -> str:
        return f" (manage.py control {command} {sig.pk})" if hints else ""

    if sig.status == Status.WAITING_APPROVAL:
        return [f"⚠ Waiting for approval{hint('approve')}"]
    if sig.status == Status.PAUSED:
        return [f"⏸ Paused{hint('resume')}"]
    if sig.kind == Kind.SWARM and sig.status == Status.RUNNING and not sig.config.get("closed"):
        return [f"Open swarm: it ends once closed{hint('close')}"]
    if sig.error and sig.status != Status.COMPLETED:
        return [f"✕ {error_text(sig.error)}"]
    if sig.status == Status.COMPLETED:
        return [f"Result: {clip(json.dumps(sig.result, default=str), BOX_MIN_WIDTH)}"]
    return []


def error_text(error: dict | None) -> str:
    if not error:
        return "no error recorded"
    return f"{error.get('type') or 'Error'}: {error.get('message', '')}"


def available_actions(sig: Signature) -> list[str]:
    checks = [
        ("pause", lifecycle.PAUSABLE),
        ("resume", lifecycle.RESUMABLE),
        ("interrupt", lifecycle.INTERRUPTIBLE),
        ("retry", lifecycle.RETRYABLE),
        ("rerun", lifecycle.RERUNNABLE),
        ("approve", (Status.WAITING_APPROVAL,)),
    ]
    actions = [name for name, allowed in checks if sig.status in allowed]
    if lifecycle.can_skip(sig):
        actions.append("skip")
    actions.append("restore" if sig.delete_after else "delete")
    return actions + ["cancel --yes"]


def _actions(sig: Signature) -> str:
    return f"Actions: {', '.join(available_actions(sig))} (manage.py control ACTION {sig.pk})"


def box(lines: list[str]) -> str:
    limit = max(BOX_MIN_WIDTH, shutil.get_terminal_size((100, 24)).columns - 4)
    inner = min(limit, max([BOX_MIN_WIDTH] + [width_of(line) for line in lines]))
    body = [f"│ {clip(line, inner)}{' ' * (inner - width_of(clip(line, inner)))} │" for line in lines]
    return "\n".join([f"┌{'─' * (inner + 2)}┐", *body, f"└{'─' * (inner + 2)}┘"])


# Redrawing in place ---------------------------------------------------------------------------


class Screen:
    """Redraws a line or a block in place on a terminal; elsewhere prints each change once."""

    def __init__(self, stream: OutputWrapper):
        self.stream = stream
        self.tty = stream.isatty()
        self.last = ""
        self.height = 0
        self.open_line = False

    def line(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self.tty:
            columns = shutil.get_terminal_size((100, 24)).columns
            self._write(f"\r{clip(text, columns - 1)}\x1b[K")
            self.open_line = True
        else:
            self._write(text + "\n")

    def block(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self.tty and self.height:
            self._write(f"\x1b[{self.height}F\x1b[J")
        elif self.height:
            self._write("\n")
        self._write(text + "\n")
        self.height = text.count("\n") + 1

    def end(self) -> None:
        """Leave the cursor on a fresh line after an in-place line."""
        if self.open_line:
            self._write("\n")
            self.open_line = False

    def _write(self, text: str) -> None:
        self.stream.write(text, ending="")
        self.stream.flush()
