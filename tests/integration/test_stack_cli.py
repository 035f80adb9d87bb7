"""``mlops up`` / ``status --json`` / ``down`` on a stack of its own: ten healthy processes, then none."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlops.settings import SERVICES, env_name
from mlops.stack import procs
from tests.integration.stack import PORT_BASE, stack_env

pytestmark = pytest.mark.integration


def _mlops(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlops.cli.main", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_up_status_down(tmp_path: Path) -> None:
    env = stack_env(tmp_path)
    base = PORT_BASE + 500  # a stack of its own beside the session's
    env["MLOPS_EMBEDDED_KAFKA_PORT"] = str(base + 92)
    env["MLOPS_EMBEDDED_REDIS_PORT"] = str(base + 79)
    for i, service in enumerate(SERVICES):
        env[f"MLOPS_{env_name(service)}_HTTP_PORT"] = str(base + 1 + i)
        env[f"MLOPS_{env_name(service)}_GRPC_PORT"] = str(base + 11 + i)
    up = _mlops(env, "up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = _mlops(env, "status", "--json")
        assert status.returncode == 0, status.stderr
        rows = json.loads(status.stdout)
        assert sorted(r["name"] for r in rows) == sorted(["broker", "redis", *SERVICES])
        assert all(r["healthy"] for r in rows), rows
        assert all(set(r) == {"name", "pid", "http", "grpc", "healthy"} for r in rows)
        by_name = {r["name"]: r for r in rows}
        assert by_name["broker"]["http"] is None and by_name["redis"]["grpc"] is None
        assert by_name["ingest"]["http"] == f"127.0.0.1:{base + 1}"
        assert by_name["ingest"]["grpc"] == f"127.0.0.1:{base + 11}"
        state = procs.load(tmp_path)
    finally:
        down = _mlops(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    time.sleep(0.5)
    still = [p.name for p in state.procs if procs.alive(p)]
    assert still == [], f"still running after down: {still}"
    assert not procs.port_open(f"127.0.0.1:{base + 92}") and not procs.port_open(f"127.0.0.1:{base + 79}")
    assert json.loads(_mlops(env, "status", "--json").stdout) == []
