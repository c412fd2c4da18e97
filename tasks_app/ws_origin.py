"""The WebSocket Origin check: a socket opens only from the page's own origin (scheme, host and port).

Channels' ``AllowedHostsOriginValidator`` compares host names only, so a page on another port of the
same host (``http://h:9000``) or the plain-HTTP twin of an HTTPS site could open a socket with the
user's cookies. Here the Origin must equal the origin the browser used to reach this server: the
``Host`` header (itself in ALLOWED_HOSTS) with the connection's scheme, ``https`` behind a proxy that
says so through ``SECURE_PROXY_SSL_HEADER``. ``CSRF_TRUSTED_ORIGINS`` (exact entries) are accepted too,
as Django's CSRF check accepts them for forms.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


def normalised(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin, default ports filled in; None when it is not an http(s) origin."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def page_scheme(scope: dict) -> str:
    """``https`` when the socket came over TLS, or through a proxy whose TLS header settings trust."""
    if scope.get("scheme") == "wss":
        return "https"
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name = proxy[0].removeprefix("HTTP_").lower().replace("_", "-").encode()
        if (header(scope, name) or "").split(",")[0].strip() == proxy[1]:
            return "https"
    return "http"


def own_origin(scope: dict) -> tuple[str, str, int] | None:
    """The origin of the page this socket belongs to, from its Host header; None for a host not allowed."""
    host = header(scope, b"host")
    if not host:
        return None
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    return normalised(f"{page_scheme(scope)}://{host}")


def origin_allowed(scope: dict) -> bool:
    origin = normalised(header(scope, b"origin") or "")
    if origin is None:
        return False
    trusted = {normalised(entry) for entry in settings.CSRF_TRUSTED_ORIGINS if "*" not in entry}
    return origin == own_origin(scope) or origin in trusted


class SameOriginValidator:
    """ASGI middleware: refuse (HTTP 403 at the handshake) a socket whose Origin is not the page's own."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator guards WebSocket connections only")
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
