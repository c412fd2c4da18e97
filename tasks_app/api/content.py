"""What goes in and out of the API besides JSON rules: the body size limit, CSV and text exports."""

from __future__ import annotations

import io
import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BaseRenderer

from ..services.errors import PayloadTooLarge
from ..services.specs import MAX_JSON_DEPTH, json_depth
from .errors import InvalidInput


class JSONBodyParser(JSONParser):
    """JSON bodies up to ``ORCHESTRATOR["MAX_SPEC_BYTES"]``; a larger one is refused (413) unread.

    DRF reads JSON from the request stream, so Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` never
    applies to it: the limit is enforced here, on the declared length and on the bytes read.
    """

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        limit = settings.ORCHESTRATOR["MAX_SPEC_BYTES"]
        request = (parser_context or {}).get("request")
        declared = _content_length(request.META if request is not None else {})
        if declared > limit:
            raise PayloadTooLarge(f"the request body is {declared} bytes; the limit is {limit}")
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
        try:
            data = super().parse(io.BytesIO(body), media_type, parser_context)
            too_deep = json_depth(data) > MAX_JSON_DEPTH
        except RecursionError:
            too_deep = True
        if too_deep:
            raise ParseError(f"lists and objects nest deeper than {MAX_JSON_DEPTH} levels")
        problem = text_problem(data)
        if problem:
            raise ParseError(problem)
        return data


def text_problem(data: Any) -> str | None:
    """What makes a parsed body unstorable or unanswerable though it is valid JSON: a lone surrogate
    (``"\\ud800"``) cannot be encoded back to UTF-8, and PostgreSQL refuses NUL characters."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "text must not contain NUL characters (\\u0000)"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "text must not contain lone surrogates (\\ud800-\\udfff)"
    return None


def _content_length(meta) -> int:
    try:
        return int(meta.get("CONTENT_LENGTH") or 0)
    except (TypeError, ValueError):
        return 0


class _PassThroughRenderer(BaseRenderer):
    """Renders a body the view already produced (``logs.export``)."""

    charset = "utf-8"

    def render(self, data: Any, accepted_media_type=None, renderer_context=None) -> bytes:
        text = data if isinstance(data, str) else json.dumps(data, default=str)
        return text.encode(self.charset)


class CSVRenderer(_PassThroughRenderer):
    media_type = "text/csv"
    format = "csv"


class TextRenderer(_PassThroughRenderer):
    media_type = "text/plain"
    format = "text"


class FormatNegotiation(DefaultContentNegotiation):
    """``?format=`` must name one of the view's formats; anything else is bad input (400), not a 404."""

    def filter_renderers(self, renderers, format):
        matching = [renderer for renderer in renderers if renderer.format == format]
        if not matching:
            known = ", ".join(sorted({r.format for r in renderers if r.format != "api"}))
            raise InvalidInput({"format": f"unknown format {format!r}; use one of {known}"})
        return matching
