"""``POST /api/auth/token/``: DRF's token view under the sign-in limits, reading its body like every
other API view (size and nesting limits: 413 and 400, never a 500)."""

from __future__ import annotations

from drf_spectacular.authentication import BasicScheme
from rest_framework import exceptions
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.parsers import FormParser, MultiPartParser

from .auth import refuse_if_locked_out
from .content import JSONBodyParser


class TokenView(ObtainAuthToken):
    """``POST /api/auth/token/`` with ``username`` and ``password``: ``{"token": ...}``."""

    parser_classes = [JSONBodyParser, FormParser, MultiPartParser]

    def post(self, request, *args, **kwargs):
        try:
            return super().post(request, *args, **kwargs)
        except exceptions.ValidationError:
            refuse_if_locked_out(request)
            raise


class LimitedBasicScheme(BasicScheme):
    """The OpenAPI description of ``auth.BasicAuthentication``: DRF's Basic scheme, unchanged."""

    target_class = "tasks_app.api.auth.BasicAuthentication"
