"""Every API error is JSON ``{"detail", "code"}``; a 400 also names each bad field in ``errors``.

Domain errors map to HTTP here, once: ``SpecError`` → 400, ``InvalidTransition`` → 409,
``PayloadTooLarge`` → 413. Anything DRF raises keeps its status. Bad input never ends in a 500.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from ..services.errors import InvalidTransition, PayloadTooLarge, SpecError


class InvalidInput(exceptions.APIException):
    """A 400 naming each bad field: ``errors`` maps a field (or a path like ``tasks[3].task``) to its problem."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"

    def __init__(self, errors: dict[str, str], detail: str | None = None, code: str = "invalid"):
        self.errors = errors
        super().__init__(detail or "; ".join(f"{field}: {problem}" for field, problem in errors.items()), code)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The current status forbids this action."
    default_code = "invalid_transition"


class TooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    exc = as_api_exception(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a bug, not bad input: Django's 500 handling (and its logging) takes over
    response.data = {"detail": _text(exc.detail), "code": _code(exc)}
    if isinstance(exc, InvalidInput):
        response.data["errors"] = exc.errors
    _answer_in_json(context.get("request"))
    return response


def as_api_exception(exc: Exception) -> Exception:
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, PermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, SpecError):
        return InvalidInput(exc.errors, str(exc))
    if isinstance(exc, exceptions.ValidationError):
        return InvalidInput(field_errors(exc.detail))
    if isinstance(exc, exceptions.ParseError):
        return InvalidInput({"body": _text(exc.detail)}, _text(exc.detail), code="parse_error")
    if isinstance(exc, InvalidTransition):
        return Conflict(str(exc))
    if isinstance(exc, (PayloadTooLarge, RequestDataTooBig)):
        return TooLarge(str(exc) or None)
    if isinstance(exc, DjangoValidationError):
        return InvalidInput(field_errors(exc.message_dict if hasattr(exc, "error_dict") else exc.messages))
    if isinstance(exc, SuspiciousOperation):
        return InvalidInput({"body": str(exc)}, code="bad_request")
    return exc


def field_errors(detail: Any, prefix: str = "") -> dict[str, str]:
    """DRF's nested error detail flattened to ``{path: message}`` (``tags[2]``, ``kwargs.value``)."""
    if isinstance(detail, dict):
        flat: dict[str, str] = {}
        for key, value in detail.items():
            path = f"{prefix}[{key}]" if isinstance(key, int) else (f"{prefix}.{key}" if prefix else str(key))
            flat.update(field_errors(value, path))
        return flat
    if isinstance(detail, list) and any(isinstance(item, (dict, list)) for item in detail):
        flat = {}
        for index, value in enumerate(detail):
            if value:
                flat.update(field_errors(value, f"{prefix}[{index}]"))
        return flat
    messages = detail if isinstance(detail, list) else [detail]
    return {prefix or api_settings.NON_FIELD_ERRORS_KEY: " ".join(str(m) for m in messages)}


def _text(detail: Any) -> str:
    if isinstance(detail, (list, dict)):
        return "; ".join(f"{k}: {v}" for k, v in field_errors(detail).items())
    return str(detail)


def _code(exc: exceptions.APIException) -> str:
    code = getattr(exc.detail, "code", None)
    return code if isinstance(code, str) else exc.default_code


def _answer_in_json(request) -> None:
    """Errors are JSON even where the view would answer CSV or text (``/logs?format=csv``)."""
    renderer = getattr(request, "accepted_renderer", None)
    if renderer is not None and renderer.format not in ("json", "api"):
        request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type


# Django's own error pages, for what never reaches a DRF view (an unknown URL, a crash) -----------


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler404``: JSON under ``/api/`` (e.g. ``/api/tasks/abc/``), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": exceptions.NotFound.default_detail, "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: JSON under ``/api/``, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Server error.", "code": "error"}, status=500)
    return defaults.server_error(request)
