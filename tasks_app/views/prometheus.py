"""``/metrics``: the Prometheus scrape endpoint, for staff sessions and for a bearer token.

A Prometheus server sends ``Authorization: Bearer <ORCHESTRATOR_METRICS_TOKEN>``; a staff member can
open the page in the browser. Anyone else: 401 when not signed in (or a wrong token), 403 when signed in.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from ..services import prometheus


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not (request.user.is_staff or has_token(request)):
        return refusal(request)
    return HttpResponse(prometheus.exposition(), content_type=CONTENT_TYPE_LATEST)


def has_token(request: HttpRequest) -> bool:
    expected = settings.ORCHESTRATOR["METRICS_TOKEN"]
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def refusal(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated and "Authorization" not in request.headers:
        return HttpResponse("Staff only.\n", status=403, content_type="text/plain")
    response = HttpResponse(
        "Sign in as staff or send the metrics bearer token.\n", status=401, content_type="text/plain"
    )
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response
