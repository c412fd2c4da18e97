"""Signing in with a password, under the limits of ``services.login_limits``.

The backend is the one door every password goes through (Django's ``authenticate``: the sign-in page,
the admin's, DRF's Basic authentication and ``/api/auth/token/``). A refusal for a lock-out leaves
its wait on the request (``LOCKED_OUT``), so each entry point can answer it in its own way: a form
message on the pages, a 429 with ``Retry-After`` on the API.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils.translation import ngettext

from .services import login_limits

LOCKED_OUT = "orchestrator_login_locked_for"


def locked_out_for(request) -> int:
    """Seconds the refused sign-in of this request must wait; 0 when it was not a lock-out."""
    return getattr(request, LOCKED_OUT, 0) if request is not None else 0


class LoginLimitsBackend(ModelBackend):
    """Django's model backend behind the failure limits: a locked account or address is refused
    before its password is checked, a wrong password is counted, a right one resets the account."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        username = username if username is not None else kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None or request is None:
            return super().authenticate(request, username=username, password=password, **kwargs)
        address = login_limits.client_address(request)
        if wait := login_limits.locked_for(username, address):
            self._refuse(request, wait)
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            if wait := login_limits.record_failure(username, address):
                self._refuse(request, wait)
            return None
        login_limits.record_success(username)
        return user

    async def aauthenticate(self, request, username=None, password=None, **kwargs):
        return await sync_to_async(self.authenticate)(request, username=username, password=password, **kwargs)

    @staticmethod
    def _refuse(request, wait: int) -> None:
        setattr(request, LOCKED_OUT, wait)
        raise PermissionDenied  # Django's authenticate() asks no other backend


def lockout_message(wait: int) -> str:
    minutes = max(1, -(-wait // 60))
    return ngettext(
        "Too many failed sign-in attempts. Try again in %(minutes)d minute.",
        "Too many failed sign-in attempts. Try again in %(minutes)d minutes.",
        minutes,
    ) % {"minutes": minutes}


class LockoutMessageMixin:
    """A sign-in form that says when a lock-out, not a wrong password, refused it."""

    def get_invalid_login_error(self) -> ValidationError:
        wait = locked_out_for(self.request)
        if wait:
            return ValidationError(lockout_message(wait), code="locked_out")
        return super().get_invalid_login_error()

    @property
    def locked_out(self) -> bool:
        return any(error.code == "locked_out" for error in self.errors.as_data().get("__all__", []))


class LoginForm(LockoutMessageMixin, AuthenticationForm):
    """``/accounts/login/``."""


class AdminLoginForm(LockoutMessageMixin, AdminAuthenticationForm):
    """``/admin/login/``."""
