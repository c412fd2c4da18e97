"""ASGI entry point (daphne): Django over HTTP, routed by Channels by protocol.

WebSockets (``tasks_app.routing``) pass an Origin check (``tasks_app.ws_origin``: the page's own
scheme, host and port, so a page of another site or port cannot open a socket with the user's
cookies) and the session authentication of the web UI.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")

# Set up Django (apps, models) before importing anything that touches them.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from tasks_app.routing import websocket_urlpatterns  # noqa: E402
from tasks_app.ws_origin import SameOriginValidator  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
