"""/healthz: 200 when the database and Redis answer, 503 naming the part that does not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import OperationalError
from django.test import Client

from tasks_app.views import health

pytestmark = pytest.mark.django_db


def test_healthy_server_answers_ok_without_a_session():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.parametrize("part", ["database", "redis"])
def test_a_part_that_is_down_makes_it_503_and_is_named(monkeypatch, part):
    def down():
        raise OperationalError("connection refused")

    monkeypatch.setitem(health.CHECKS, part, down)
    response = Client().get("/healthz")
    assert response.status_code == 503
    other = {"database": "redis", "redis": "database"}[part]
    assert response.json() == {"status": "down", part: "down", other: "ok"}


def test_redis_really_unreachable_is_reported_within_the_timeout(monkeypatch, settings):
    monkeypatch.setattr(health, "_redis", None)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = Client().get("/healthz")
    assert response.status_code == 503 and response.json()["redis"] == "down"
    monkeypatch.setattr(health, "_redis", None)  # the next test connects to the real one again


def test_with_debug_off_it_is_not_redirected_to_https_like_the_pages(tmp_path):
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "x7!k" + "q9Zr-2mVt_8LpW#cYb4nHs6JdAe%Ug3F" * 2,
        "ALLOWED_HOSTS": "testserver",
        "ORCHESTRATOR_VAR_DIR": str(tmp_path),
    }
    code = ("from django.test import Client; c = Client(); "
            "print(c.get('/healthz').status_code, c.get('/accounts/login/').status_code)")
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=settings.BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "200 301", result.stdout + result.stderr


def test_only_get():
    assert Client().post("/healthz").status_code == 405
