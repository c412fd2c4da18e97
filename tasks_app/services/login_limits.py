"""Password guessing: failed sign-ins counted per account and per client address, then a lock-out.

Every way in that takes a password (the sign-in page, the admin's, ``/api/auth/token/`` and HTTP Basic
on the API) goes through ``tasks_app.auth.LoginLimitsBackend``, which asks this module first. The
counters live in the ``login_limits`` cache (Redis at ``REDIS_URL``), so every web process shares them.

``ORCHESTRATOR["LOGIN_FAILURES_PER_ACCOUNT"]`` failures for one username, or
``LOGIN_FAILURES_PER_ADDRESS`` from one address, within ``LOGIN_LOCKOUT_SECONDS`` of the first, lock
that username (or address) for ``LOGIN_LOCKOUT_SECONDS``: even the right password is refused then.
A successful sign-in forgets the account's failures, not the address's (one valid account must not
let an address go on guessing others). 0 turns a limit off. With Redis unreachable the limits are
not applied (logged): signing in keeps working, the password check itself is unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from redis.exceptions import RedisError
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)

CACHE_ALIAS = "login_limits"


@dataclass(frozen=True)
class Subject:
    """What failures are counted against: one account, or one client address."""

    kind: str  # "account" or "address"
    value: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{hashlib.sha256(self.value.encode('utf-8', 'surrogatepass')).hexdigest()}"

    @property
    def limit(self) -> int:
        name = "LOGIN_FAILURES_PER_ACCOUNT" if self.kind == "account" else "LOGIN_FAILURES_PER_ADDRESS"
        return settings.ORCHESTRATOR[name]


def client_address(request) -> str:
    """The address the API's throttles use too: ``X-Forwarded-For`` only past ``NUM_PROXIES`` proxies."""
    return BaseThrottle().get_ident(request) or "unknown"


def subjects(username: str, address: str) -> list[Subject]:
    return [Subject("account", username), Subject("address", address)]


def locked_for(username: str, address: str) -> int:
    """Seconds until ``username`` may try again from ``address``; 0 when neither is locked."""
    try:
        return max((_lock_seconds(subject) for subject in subjects(username, address)), default=0)
    except RedisError:
        logger.warning("login limits not checked: Redis is unreachable", exc_info=True)
        return 0


def record_failure(username: str, address: str) -> int:
    """Counts a wrong password; returns the seconds of the lock-out this failure started (or 0)."""
    try:
        return max((_count_failure(subject) for subject in subjects(username, address)), default=0)
    except RedisError:
        logger.warning("login failure not counted: Redis is unreachable", exc_info=True)
        return 0


def record_success(username: str) -> None:
    """The right password: the account's failures are forgotten (the address's are not)."""
    try:
        caches[CACHE_ALIAS].delete(f"failures:{Subject('account', username).key}")
    except RedisError:
        logger.warning("login failures not reset: Redis is unreachable", exc_info=True)


def reset_all() -> int:
    """Forgets every counter and lock-out (an operator's unlock, and a clean slate between tests)."""
    cache = caches[CACHE_ALIAS]
    try:
        client = cache._cache.get_client(write=True)
        keys = list(client.scan_iter(match=cache.make_key("*"), count=1000))
        return client.delete(*keys) if keys else 0
    except RedisError:
        logger.warning("login limits not reset: Redis is unreachable", exc_info=True)
        return 0


def _window() -> int:
    return settings.ORCHESTRATOR["LOGIN_LOCKOUT_SECONDS"]


def _lock_seconds(subject: Subject) -> int:
    until = caches[CACHE_ALIAS].get(f"lock:{subject.key}")
    return max(1, math.ceil(until - time.time())) if until else 0


def _count_failure(subject: Subject) -> int:
    if subject.limit <= 0 or _window() <= 0:
        return 0
    cache, key = caches[CACHE_ALIAS], f"failures:{subject.key}"
    cache.add(key, 0, timeout=_window())  # the window starts at the first failure
    try:
        failures = cache.incr(key)
    except ValueError:  # expired between the two calls: this failure starts a new window
        cache.set(key, failures := 1, timeout=_window())
    if failures < subject.limit:
        return 0
    cache.set(f"lock:{subject.key}", time.time() + _window(), timeout=_window())
    cache.delete(key)
    logger.warning("sign-in locked for %s s after %s failures (%s)", _window(), failures, subject.kind)
    return _window()
