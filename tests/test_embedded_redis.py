"""The embedded Redis of `make run` and of the tests: starts, answers, restarts empty, leaves nothing."""

from __future__ import annotations

import subprocess
import sys

import redis
from django.conf import settings

from tasks_app.embedded_redis import EmbeddedRedis
from tasks_app.management.commands.orchestrate import port_open
from tests.workers import gone


def test_start_publishes_a_working_url_and_stop_leaves_nothing_behind(tmp_path):
    url_file = tmp_path / "redis.url"
    server = EmbeddedRedis(tmp_path / "redis", url_file=url_file)

    url = server.start()
    pid = server.process.pid

    assert url_file.read_text().strip() == url
    assert redis.Redis.from_url(url).ping()
    server.stop()
    assert gone(pid)
    assert not url_file.exists()
    assert not port_open("127.0.0.1", server.port)


def test_restart_comes_back_empty_on_the_same_port(tmp_path):
    with EmbeddedRedis(tmp_path) as server:
        url, old_pid = server.url, server.process.pid
        client = redis.Redis.from_url(url)
        client.set("job", "queued")

        server.restart()

        assert server.url == url
        assert server.process.pid != old_pid
        assert gone(old_pid)
        assert client.get("job") is None


def test_stop_keeps_a_url_file_that_names_another_server(tmp_path):
    url_file = tmp_path / "redis.url"
    with EmbeddedRedis(tmp_path, url_file=url_file):
        url_file.write_text("redis://127.0.0.1:6390/0\n")

    assert url_file.read_text().strip() == "redis://127.0.0.1:6390/0"


def test_the_server_dies_with_the_process_that_started_it(tmp_path):
    script = (
        "import sys, time; from pathlib import Path; from tasks_app.embedded_redis import EmbeddedRedis; "
        "server = EmbeddedRedis(Path(sys.argv[1])); server.start(); "
        "print(server.process.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=settings.BASE_DIR,
                              stdout=subprocess.PIPE, text=True)
    redis_pid = int(parent.stdout.readline())

    parent.kill()
    parent.wait()

    assert gone(redis_pid)
