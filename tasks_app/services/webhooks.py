"""The HTTP side of a webhook delivery: where it may go, how long it may take, and its signature.

A user's URL is someone else's server, or, from inside the deployment, the deployment itself. So:
every address the host name resolves to must be global (``ORCHESTRATOR_WEBHOOK_ALLOW_PRIVATE``
lifts that), and the connection goes to an address that was checked, never through a second lookup
that DNS rebinding could answer differently. Redirects are not followed. The whole delivery (lookup,
connect, request, the answer's status line and headers) ends at one deadline
(``ORCHESTRATOR_WEBHOOK_DEADLINE``), however slowly the other side trickles. Failures carry a short
reason meant for the user; the details go to the log only.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
from urllib.parse import SplitResult, urlsplit

from django.conf import settings

log = logging.getLogger(__name__)

USER_AGENT = "orchestrator-webhook/2"
SIGNATURE_HEADER = "X-Orchestrator-Signature"
TIMESTAMP_HEADER = "X-Orchestrator-Timestamp"
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookFailure(Exception):
    """A delivery that did not succeed; ``reason`` is what the user is shown."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent  # retrying cannot help (a refused destination, a malformed URL)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``"<timestamp>." + body`` (docs/security.md shows the check)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def post(url: str, body: bytes, *, secret: str, headers: dict[str, str] | None = None) -> int:
    """POST ``body`` as JSON, signed; the answer's status (2xx) or ``WebhookFailure``."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookFailure("invalid URL", permanent=True) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookFailure("invalid URL", permanent=True)
    deadline = time.monotonic() + settings.ORCHESTRATOR_WEBHOOK_DEADLINE
    addresses = allowed_addresses(parts.hostname, port, deadline)
    timestamp = int(time.time())
    all_headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        **(headers or {}),
    }
    status = _exchange(parts, port, addresses, deadline, body, all_headers)
    if 300 <= status < 400:
        raise WebhookFailure(f"HTTP {status} (redirects are not followed)")
    if status >= 400:
        raise WebhookFailure(f"HTTP {status}")
    return status


# Where it may go ------------------------------------------------------------------------------


def allowed_addresses(host: str, port: int, deadline: float) -> list[Address]:
    """Every address ``host`` resolves to, all of them allowed, or ``WebhookFailure``."""
    addresses = _resolve(host, port, deadline)
    if not settings.ORCHESTRATOR_WEBHOOK_ALLOW_PRIVATE and not all(is_public(a) for a in addresses):
        log.warning("webhook to %s refused: it resolves to %s", host, ", ".join(map(str, addresses)))
        raise WebhookFailure("destination not allowed", permanent=True)
    return addresses


def is_public(address: Address) -> bool:
    """Global unicast only: no loopback, private, link-local, multicast, reserved or unspecified."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
    )


def _resolve(host: str, port: int, deadline: float) -> list[Address]:
    """getaddrinfo has no timeout of its own: it runs in a thread the deadline does not wait for."""
    found: dict[str, object] = {}

    def lookup() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            found["error"] = exc

    thread = threading.Thread(target=lookup, name="webhook-dns", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise WebhookFailure("timed out")
    if "error" in found:
        log.info("webhook host %s not resolved: %s", host, found["error"])
        raise WebhookFailure("host not found")
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in found["infos"]]
    return list(dict.fromkeys(addresses))


# How long it may take -------------------------------------------------------------------------


class Watchdog:
    """Shuts the connection down at the deadline, which ends any blocked send, receive or TLS handshake.

    It acts on the file descriptor, which the TLS socket takes over from the plain one unchanged.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.expired = False
        self.sock = sock  # the socket in use: the plain one, then the TLS one wrapped around it
        self._fd = sock.fileno()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        self.expired = True
        view = socket.socket(fileno=self._fd)
        try:
            view.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            view.detach()  # the connection stays the caller's to close

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()


def _exchange(
    parts: SplitResult, port: int, addresses: list[Address], deadline: float, body: bytes, headers: dict[str, str]
) -> int:
    watchdog = Watchdog(_connect(addresses, port, deadline), deadline)
    try:
        with watchdog:
            if parts.scheme == "https":
                watchdog.sock = _tls(watchdog.sock, parts.hostname)
            status = _request(parts, port, watchdog.sock, body, headers)
    except (OSError, http.client.HTTPException) as exc:
        raise _failure(exc, timed_out=watchdog.expired) from None
    finally:
        watchdog.sock.close()
    if watchdog.expired:  # http.client takes an answer cut short for a whole one
        raise WebhookFailure("timed out")
    return status


def _connect(addresses: list[Address], port: int, deadline: float) -> socket.socket:
    """A connection to the first checked address that answers; never a new lookup."""
    error: OSError | None = None
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WebhookFailure("timed out")
        try:
            return socket.create_connection((str(address), port), timeout=remaining)
        except OSError as exc:
            error = exc
    raise _failure(error, timed_out=False)


def _tls(sock: socket.socket, host: str) -> ssl.SSLSocket:
    """TLS to the checked address, the certificate verified against the host name of the URL."""
    return ssl.create_default_context().wrap_socket(sock, server_hostname=host)


def _request(parts: SplitResult, port: int, sock: socket.socket, body: bytes, headers: dict[str, str]) -> int:
    """One request on the connected socket (http.client uses it as is: no connect, no redirect)."""
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, port)
    connection.sock = sock
    target = f"{parts.path or '/'}{'?' + parts.query if parts.query else ''}"
    connection.request("POST", target, body=body, headers=headers)
    response = connection.getresponse()
    response.close()
    return response.status


def _failure(exc: OSError | http.client.HTTPException | None, *, timed_out: bool) -> WebhookFailure:
    """The short reason a user is shown; the exception itself only goes to the log."""
    log.info("webhook delivery failed: %r", exc)
    if timed_out or isinstance(exc, TimeoutError):
        return WebhookFailure("timed out")
    if isinstance(exc, ConnectionRefusedError):
        return WebhookFailure("connection refused")
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return WebhookFailure("TLS error")
    if isinstance(exc, ConnectionError | http.client.HTTPException):
        return WebhookFailure("connection closed without an answer")
    return WebhookFailure("connection failed")
