"""What every page shares: who sees which signatures, the actor name, and refusals as messages."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string

from ..models import Signature, may_control
from ..services import events
from ..services.errors import OrchestratorError, SpecError


def visible(request: HttpRequest) -> QuerySet[Signature]:
    """The signatures this person may see: their own, or all with the view permission."""
    return Signature.objects.visible_to(request.user)


def get_signature(request: HttpRequest, pk: int) -> Signature:
    """The signature, or 404 when it does not exist or belongs to someone else."""
    return get_object_or_404(visible(request), pk=pk)


def get_controllable(request: HttpRequest, pk: int) -> Signature:
    """The signature to act on: 404 as ``get_signature``, 403 when it may be seen but not controlled."""
    sig = get_signature(request, pk)
    if not may_control(request.user, sig):
        raise PermissionDenied("Controlling another user's task needs the change permission.")
    return sig


def row_id(value: str | None) -> int | None:
    """A primary key typed in a URL or a form, or None: digits 0-9 only (``int()`` also reads "١٢", and
    ``"²".isdigit()`` is true though ``int()`` refuses it), and small enough for a database integer."""
    return int(value) if value and value.isascii() and value.isdigit() and len(value) < 19 else None


def actor(request: HttpRequest) -> str:
    return events.actor_name(request.user)


def refusal(exc: OrchestratorError) -> str:
    """A refused action in words a person reads (never a traceback)."""
    if isinstance(exc, SpecError):
        return "; ".join(str(problem) for problem in exc.errors.values())
    return str(exc)


def with_messages(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """Append the pending messages to an HTMX partial as an out-of-band swap of the message area."""
    if messages.get_messages(request):
        html = render_to_string("base.html#messages", {"oob": True}, request=request)
        response.content += html.encode()
    return response
