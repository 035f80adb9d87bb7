"""Safe by default: a real service process bound to every interface with no tokens file refuses to start
(every caller would be an anonymous admin) unless auth is turned off on purpose; and the shipped
deployments (docker-compose.yml, deploy/k8s) run with auth on, a tokens file mounted into every service."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.stack import PORT_BASE
from tests.security.conftest import SecureStack

ROOT = Path(__file__).resolve().parents[2]
LONE_HTTP, LONE_GRPC = PORT_BASE + 650, PORT_BASE + 651


def _lone_ingest_env(secure: SecureStack, **extra: str) -> dict[str, str]:
    """A second ingest process on the secure stack's broker and Redis, on ports of its own, on 0.0.0.0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update({
        "MLOPS_HOME": str(secure.home / "lone"),
        "MLOPS_KAFKA_BOOTSTRAP": secure.env["MLOPS_KAFKA_BOOTSTRAP"],
        "MLOPS_REDIS_URL": secure.env["MLOPS_REDIS_URL"],
        "MLOPS_HOST": "0.0.0.0",
        "MLOPS_INGEST_HTTP_PORT": str(LONE_HTTP),
        "MLOPS_INGEST_GRPC_PORT": str(LONE_GRPC),
        **extra,
    })
    return env


def test_bound_to_every_interface_without_tokens_it_refuses_to_start(secure: SecureStack) -> None:
    proc = subprocess.run([sys.executable, "-m", "services.ingest"], env=_lone_ingest_env(secure), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    refusals = [line for line in proc.stderr.splitlines() if "refusing to start" in line]
    assert len(refusals) == 1, proc.stderr[-3000:]
    for words in ("0.0.0.0", "MLOPS_AUTH_TOKENS_FILE", "MLOPS_AUTH_ENABLED=false", "anonymous admin"):
        assert words in refusals[0], refusals[0]
    with httpx.Client(timeout=5) as http:
        try:
            http.get(f"http://127.0.0.1:{LONE_HTTP}/healthz")
            raise AssertionError("something answers on the refused service's port")
        except httpx.ConnectError:
            pass


def test_with_auth_turned_off_on_purpose_it_starts(secure: SecureStack) -> None:
    env = _lone_ingest_env(secure, MLOPS_AUTH_ENABLED="false")
    proc = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        healthy = False
        while time.monotonic() < deadline and proc.poll() is None and not healthy:
            try:
                healthy = httpx.get(f"http://127.0.0.1:{LONE_HTTP}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.5)
        assert healthy, f"ingest did not start (exit {proc.poll()})"
    finally:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    assert "auth is off" in output and "anonymous admin" in output, output[-3000:]
