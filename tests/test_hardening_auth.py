"""Password guessing (issue 17, item 6): failed sign-ins on the sign-in page, the admin's, the API token
endpoint and HTTP Basic are limited per account and per client address, in counters every process
shares; a lock-out refuses even the right password, says so, and ends. The token endpoint reads its
body under the API's size and nesting limits.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import Client, override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.conftest import PASSWORD, make_user
from tests.live_server import daphne
from tests.workers import subprocess_env

pytestmark = pytest.mark.django_db

LOCKED = "Too many failed sign-in attempts"


def lowered(**limits: int) -> override_settings:
    """Thresholds a test can reach quickly: ``LOGIN_FAILURES_PER_ACCOUNT`` and friends."""
    return override_settings(ORCHESTRATOR={**settings.ORCHESTRATOR, **limits})


def token(client: APIClient, username: str, password: str):
    return client.post("/api/auth/token/", {"username": username, "password": password}, format="json")


def basic(client: APIClient, username: str, password: str):
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    return client.get("/api/tasks/", HTTP_AUTHORIZATION=f"Basic {credentials}")


def assert_locked_out(response) -> int:
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["code"] == "locked_out" and LOCKED in body["detail"]
    wait = int(response["Retry-After"])
    assert 1 <= wait <= settings.ORCHESTRATOR["LOGIN_LOCKOUT_SECONDS"]
    return wait


def test_the_token_endpoint_locks_an_account_out_and_refuses_even_its_right_password(owner):
    client = APIClient(REMOTE_ADDR="198.51.100.1")
    with lowered(LOGIN_FAILURES_PER_ACCOUNT=3):
        assert [token(client, "owner", "guess").status_code for _ in range(2)] == [400, 400]
        assert_locked_out(token(client, "owner", "guess"))
        assert_locked_out(token(client, "owner", PASSWORD))
    assert not Token.objects.filter(user=owner).exists()


def test_http_basic_is_locked_out_per_account_and_other_accounts_go_on(owner, colleague):
    client = APIClient(REMOTE_ADDR="198.51.100.2")
    with lowered(LOGIN_FAILURES_PER_ACCOUNT=3):
        assert {basic(client, "owner", "guess").status_code for _ in range(2)} <= {401, 403}
        assert_locked_out(basic(client, "owner", "guess"))
        assert_locked_out(basic(client, "owner", PASSWORD))
        assert basic(client, "colleague", PASSWORD).status_code == 200


def test_the_sign_in_page_says_the_account_is_locked_and_does_not_sign_in(owner):
    client = Client(REMOTE_ADDR="198.51.100.3")
    with lowered(LOGIN_FAILURES_PER_ACCOUNT=3):
        first = client.post("/accounts/login/", {"username": "owner", "password": "guess"})
        assert first.status_code == 200 and b"didn't match" in first.content
        client.post("/accounts/login/", {"username": "owner", "password": "guess"})
        third = client.post("/accounts/login/", {"username": "owner", "password": "guess"})
        assert LOCKED in third.content.decode() and "Try again in 15 minutes" in third.content.decode()
        right = client.post("/accounts/login/", {"username": "owner", "password": PASSWORD})
        assert right.status_code == 200 and LOCKED in right.content.decode()
    assert client.get("/")["Location"].startswith("/accounts/login/")


def test_the_admin_sign_in_is_locked_out_too(staff):
    client = Client(REMOTE_ADDR="198.51.100.4")
    with lowered(LOGIN_FAILURES_PER_ACCOUNT=2):
        for _ in range(2):
            client.post("/admin/login/?next=/admin/", {"username": "staff", "password": "guess"})
        right = client.post("/admin/login/?next=/admin/", {"username": "staff", "password": PASSWORD})
        assert right.status_code == 200 and LOCKED in right.content.decode()
    assert client.get("/admin/").status_code == 302


def test_failures_on_every_door_count_together(owner):
    client = APIClient(REMOTE_ADDR="198.51.100.5")
    with lowered(LOGIN_FAILURES_PER_ACCOUNT=3):
        Client(REMOTE_ADDR="198.51.100.5").post("/accounts/login/", {"username": "owner", "password": "guess"})
        basic(client, "owner", "guess")
        assert_locked_out(token(client, "owner", "guess"))
        assert_locked_out(basic(client, "owner", PASSWORD))


def test_a_right_password_forgets_the_accounts_failures(owner):
    client = APIClient(REMOTE_ADDR="198.51.100.6")
    with lowered(LOGIN_FAILURES_PER_ACCOUNT=3):
        for _ in range(3):
            assert [token(client, "owner", "guess").status_code for _ in range(2)] == [400, 400]
            assert token(client, "owner", PASSWORD).status_code == 200


def test_one_address_guessing_many_accounts_is_locked_out_and_other_addresses_are_not(owner):
    guesser = APIClient(REMOTE_ADDR="198.51.100.7")
    with lowered(LOGIN_FAILURES_PER_ACCOUNT=100, LOGIN_FAILURES_PER_ADDRESS=4):
        assert [token(guesser, name, "guess").status_code for name in ("ann", "bob", "cy")] == [400, 400, 400]
        assert_locked_out(token(guesser, "dan", "guess"))
        assert_locked_out(token(guesser, "owner", PASSWORD))
        assert token(APIClient(REMOTE_ADDR="198.51.100.8"), "owner", PASSWORD).status_code == 200


def test_right_passwords_never_lock_anyone_out(owner):
    client = APIClient(REMOTE_ADDR="198.51.100.9")
    with lowered(LOGIN_FAILURES_PER_ACCOUNT=2, LOGIN_FAILURES_PER_ADDRESS=2):
        assert {basic(client, "owner", PASSWORD).status_code for _ in range(10)} == {200}


@override_settings(ORCHESTRATOR={**settings.ORCHESTRATOR, "LOGIN_FAILURES_PER_ACCOUNT": 2, "LOGIN_LOCKOUT_SECONDS": 1})
def test_the_lockout_ends_after_its_window(owner):
    client = APIClient(REMOTE_ADDR="198.51.100.10")
    token(client, "owner", "guess")
    assert assert_locked_out(token(client, "owner", "guess")) == 1
    deadline = time.monotonic() + 10
    while (answer := token(client, "owner", PASSWORD)).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answer.status_code == 200 and answer.json()["token"]


def test_signing_in_works_while_the_counters_redis_is_unreachable(owner):
    unreachable = {**settings.CACHES["login_limits"], "LOCATION": f"redis://127.0.0.1:{closed_port()}/0"}
    client = APIClient(REMOTE_ADDR="198.51.100.11")
    with override_settings(CACHES={**settings.CACHES, "login_limits": unreachable}):
        assert token(client, "owner", "guess").status_code == 400
        assert token(client, "owner", PASSWORD).status_code == 200


def test_the_token_endpoint_answers_a_deeply_nested_body_with_a_400():
    body = "[" * 100_000 + "]" * 100_000
    response = APIClient().post("/api/auth/token/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error" and "nest deeper" in response.json()["detail"]


def test_the_token_endpoint_refuses_an_oversize_body_with_a_413():
    limit = settings.ORCHESTRATOR["MAX_SPEC_BYTES"]
    body = json.dumps({"username": "owner", "password": "x" * (limit + 1)})
    response = APIClient().post("/api/auth/token/", body, content_type="application/json")
    assert response.status_code == 413 and response.json()["code"] == "too_large"


# Shared across processes: failures counted by a separate web server lock the test process out too. ---------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def web_server(transactional_db, tmp_path) -> Iterator[str]:
    """A daphne in its own process, on the test database and the test Redis, locking an account after 2 failures."""
    env = {**subprocess_env(), "ORCHESTRATOR_LOGIN_FAILURES_PER_ACCOUNT": "2"}
    with daphne(tmp_path / "daphne.log", env) as url:
        yield url


def post_token(url: str, username: str, password: str) -> int:
    data = json.dumps({"username": username, "password": password}).encode()
    request = urllib.request.Request(f"{url}/api/auth/token/", data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.django_db(transaction=True)
def test_failures_counted_by_another_process_lock_this_one_out(web_server):
    make_user("owner")
    assert [post_token(web_server, "owner", "guess") for _ in range(2)] == [400, 429]
    assert post_token(web_server, "owner", PASSWORD) == 429
    assert_locked_out(token(APIClient(REMOTE_ADDR="127.0.0.1"), "owner", PASSWORD))
