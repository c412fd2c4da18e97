"""The chaos run, shortened: nested workflows on 4 real workers while workers are killed with
SIGKILL, Redis restarts empty and the web server restarts under a watching client; every task
completes exactly once, every callback fires once, max_concurrency holds, no event or log line is
missing, graphs skip their failure path and join after both inputs, approvals nobody decides take
their timeout's default once, and every notification's webhook reaches a local receiver
(bench/chaos_checks.py, bench/chaos.py). The full run is `make chaos` (docs/reliability.md)."""

from __future__ import annotations

import pytest

from tests.chaos_runner import run_driver

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.mark.timeout(900)  # 58–65 s at a load average of 2–4 on 2 cores; minutes when saturated
def test_workflows_survive_killed_workers_a_redis_restart_and_a_web_restart(tmp_path):
    args = "--tasks 300 --workers 4 --duration 15 --kills 4 --redis-restarts 1 --web-restarts 1"
    output, seconds = run_driver(
        "chaos.py", *args.split(), "--reconcile-every", "3", "--stuck-after", "90", out_dir=tmp_path, timeout=840
    )

    assert "RESULT: PASS" in output
    assert "redis-server restarted" in output and "daphne killed and started again" in output
    print(output[output.index("Chaos run") :], f"\ndriver wall time: {seconds:.0f} s")
