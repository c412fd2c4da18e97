"""``/healthz``: for load balancers and supervisors; is this server able to serve?

It answers 200 when the database and Redis both answer, else 503 naming what failed. Anonymous
(a probe has no session), exempt from the HTTPS redirect, and it reveals nothing but "ok" or the
name of the part that is down.
"""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

log = logging.getLogger(__name__)
TIMEOUT = 2.0  # seconds: a probe must not hang on a blackholed server
_redis: redis.Redis | None = None


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_redis() -> None:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    _redis.ping()


CHECKS = {"database": check_database, "redis": check_redis}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    parts = {}
    for name, check in CHECKS.items():
        try:
            check()
            parts[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; the log keeps the reason
            log.warning("health check: %s is down: %s", name, exc)
            parts[name] = "down"
    healthy = all(state == "ok" for state in parts.values())
    return JsonResponse({"status": "ok" if healthy else "down", **parts}, status=200 if healthy else 503)
