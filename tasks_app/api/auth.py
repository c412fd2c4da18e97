"""Passwords on the API under the sign-in limits: a lock-out is a 429 ``{"detail", "code": "locked_out"}``
with ``Retry-After``, for HTTP Basic here and for ``POST /api/auth/token/`` (``token.py``).

DRF imports the authentication classes while it builds ``APIView``: this module imports no view.
"""

from __future__ import annotations

from rest_framework import authentication, exceptions

from ..auth import locked_out_for, lockout_message


class LockedOut(exceptions.Throttled):
    default_code = "locked_out"

    def __init__(self, wait: int):
        super().__init__(wait=wait, detail=lockout_message(wait))
        self.detail = exceptions.ErrorDetail(lockout_message(wait), code=self.default_code)


def refuse_if_locked_out(request) -> None:
    if wait := locked_out_for(request):
        raise LockedOut(wait)


class BasicAuthentication(authentication.BasicAuthentication):
    """DRF's Basic authentication; a locked account or address gets a 429, not a 401."""

    def authenticate_credentials(self, userid, password, request=None):
        try:
            return super().authenticate_credentials(userid, password, request)
        except exceptions.AuthenticationFailed:
            refuse_if_locked_out(request)
            raise
