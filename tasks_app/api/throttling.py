"""Rate limits of the API: DRF's user and anonymous throttles, with the rates read per request.

DRF's own classes copy ``DEFAULT_THROTTLE_RATES`` once, at import; reading ``api_settings`` each time
lets a settings override (tests, a reloaded configuration) take effect. A rate of ``None`` turns the
limit off. Counters live in Django's cache: per process with the default local-memory cache.
"""

from __future__ import annotations

from rest_framework import throttling
from rest_framework.settings import api_settings


class CurrentRates:
    scope: str

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class UserRateThrottle(CurrentRates, throttling.UserRateThrottle):
    """Requests per signed-in user (anonymous clients count by address)."""


class AnonRateThrottle(CurrentRates, throttling.AnonRateThrottle):
    """Requests per anonymous client address."""
