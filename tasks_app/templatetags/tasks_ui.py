"""Template helpers of the web UI: status symbols, durations, and query strings that keep filters."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.http import QueryDict
from django.utils import timezone

from ..cli import STATUS_SYMBOLS, STEP_NOTES, STEP_SYMBOLS

register = template.Library()

MARKED = "marked_for_deletion"


@register.filter
def status_symbol(status: str) -> str:
    return "⊖" if status == MARKED else STATUS_SYMBOLS.get(status, "?")


@register.filter
def step_symbol(status: str) -> str:
    return STEP_SYMBOLS.get(status, "?")


@register.filter
def step_note(status: str) -> str:
    """'in progress', 'pending', ...: the words after a step's symbol ('' when completed)."""
    return STEP_NOTES.get(status, "")


@register.filter
def status_label(status: str) -> str:
    return "in trash" if status == MARKED else status.replace("_", " ")


@register.filter
def seconds_text(seconds: float | None) -> str:
    """'45 s', '3 min', '2 h 5 min': how long, for people."""
    if seconds is None:
        return ""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@register.filter
def eta_text(seconds: float | None) -> str:
    """'3 min remaining'; 'a few seconds remaining' near the end."""
    if seconds is None:
        return ""
    return "a few seconds remaining" if seconds < 5 else f"{seconds_text(seconds)} remaining"


@register.filter
def ms_text(milliseconds: int | None) -> str:
    if milliseconds is None:
        return "–"
    if milliseconds < 1000:
        return f"{milliseconds} ms"
    return f"{milliseconds / 1000:.1f} s" if milliseconds < 60_000 else seconds_text(milliseconds / 1000)


@register.filter
def ago(moment: datetime | None) -> str:
    """'2 min ago' ('just now' under 5 seconds)."""
    if moment is None:
        return ""
    seconds = (timezone.now() - moment).total_seconds()
    return "just now" if seconds < 5 else f"{seconds_text(seconds)} ago"


@register.filter
def percent(value: float | None) -> int:
    return int(value or 0)


@register.simple_tag(takes_context=True)
def query(context, **changes) -> str:
    """The current query string with some keys changed (None or '' removes one); 'page' resets."""
    params: QueryDict = context["request"].GET.copy()
    if "page" not in changes:
        params.pop("page", None)
    for key, value in changes.items():
        if value in (None, ""):
            params.pop(key, None)
        else:
            params[key] = value
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.simple_tag(takes_context=True)
def sort_link(context, field: str) -> str:
    """The query string that sorts by ``field``, toggling the direction when it already does."""
    current = context.get("sort") or context["request"].GET.get("sort", "")
    return query(context, sort=f"-{field}" if current == field else field)


@register.simple_tag(takes_context=True)
def sort_state(context, field: str) -> str:
    """aria-sort value of a column header."""
    current = context.get("sort") or context["request"].GET.get("sort", "")
    if current == field:
        return "ascending"
    if current == f"-{field}":
        return "descending"
    return "none"


@register.simple_tag(takes_context=True)
def unread_notifications(context) -> int:
    """The signed-in person's unread notifications, for the header bell on every page."""
    from ..views.notifications import unread_count

    user = context["request"].user
    return unread_count(user) if user.is_authenticated else 0


@register.filter
def pretty_json(value) -> str:
    """Indented JSON for <pre> blocks (autoescaped by the template)."""
    import json

    return json.dumps(value, indent=2, sort_keys=True, default=str)


@register.filter
def level_class(levelname: str) -> str:
    return f"level-{str(levelname).lower()}"
