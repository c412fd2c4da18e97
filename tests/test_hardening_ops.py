"""Operational hardening (issue 17): the WebSocket Origin check compares scheme, host and port; var/
is private; the embedded Redis needs its password; RQ jobs are JSON; staff reach others' tasks through
Django permissions."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client

from orchestrator_site.asgi import application
from tests.api_helpers import ECHO, make

# WebSocket Origin: scheme, host and port ----------------------------------------------------------------


def socket_opens(owner, host: str, origin: str, extra: list[tuple[bytes, bytes]] | None = None) -> bool:
    client = Client()
    client.force_login(owner)
    headers = [
        (b"host", host.encode()),
        (b"origin", origin.encode()),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
        *(extra or []),
    ]
    path = f"/ws/tasks/{make(owner, ECHO).pk}/"

    async def connect() -> bool:
        ws = WebsocketCommunicator(application, path, headers=headers)
        connected, _ = await ws.connect()
        if connected:
            first = await ws.receive_json_from(timeout=2)
            await ws.disconnect()
            return first["type"] == "snapshot"
        return False

    return async_to_sync(connect)()


@pytest.fixture
def live_memory_layer(settings) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.ALLOWED_HOSTS = ["h", "localhost"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("live_memory_layer")
def test_a_page_on_port_8000_opens_sockets_but_another_port_or_scheme_does_not(owner):
    assert socket_opens(owner, "h:8000", "http://h:8000")
    assert not socket_opens(owner, "h:8000", "http://h:9000")
    assert not socket_opens(owner, "h:8000", "https://h:8000")
    assert not socket_opens(owner, "h:8000", "http://h")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("live_memory_layer")
def test_default_ports_are_the_same_origin_and_a_tls_proxy_makes_the_page_https(owner, settings):
    assert socket_opens(owner, "h", "http://h:80")
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxied = [(b"x-forwarded-proto", b"https")]
    assert socket_opens(owner, "h", "https://h", proxied)
    assert not socket_opens(owner, "h", "http://h", proxied)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("live_memory_layer")
def test_a_host_outside_allowed_hosts_is_refused_and_trusted_origins_are_accepted(owner, settings):
    assert not socket_opens(owner, "evil.example", "http://evil.example")
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com"]
    assert socket_opens(owner, "h:8000", "https://app.example.com")
    assert not socket_opens(owner, "h:8000", "https://app.example.com:8443")
