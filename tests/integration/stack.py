"""A handle on the embedded stack the integration tests run against, on ports of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from mlops.settings import SERVICES, env_name
from mlops.stack import procs

# Ports of the test stack, below the Linux ephemeral range (32768+) so outgoing connections never take them.
# MLOPS_TEST_PORT_BASE moves the whole set, so two test sessions can run side by side.
PORT_BASE = int(os.environ.get("MLOPS_TEST_PORT_BASE", "28100"))
TEST_PORTS = {service: (PORT_BASE + 1 + i, PORT_BASE + 1001 + i) for i, service in enumerate(SERVICES)}
KAFKA_PORT = PORT_BASE + 992
REDIS_PORT = PORT_BASE + 979


@dataclass
class Stack:
    home: Path
    env: dict[str, str]

    @property
    def kafka(self) -> str:
        return self.env["MLOPS_KAFKA_BOOTSTRAP"]

    @property
    def redis_url(self) -> str:
        return self.env["MLOPS_REDIS_URL"]

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{TEST_PORTS[service][0]}{path}"

    def grpc(self, service: str) -> str:
        return f"127.0.0.1:{TEST_PORTS[service][1]}"

    def http(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(timeout=timeout)

    def mlops(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlops.cli.main", *args], env=self.env, text=True,
                              capture_output=True, check=check, timeout=timeout)

    def pid(self, service: str) -> int:
        proc = procs.load(self.home).get(service)
        assert proc is not None and procs.alive(proc), f"{service} is not running"
        return proc.pid

    def kill9(self, service: str) -> None:
        pid = self.pid(service)
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
                os.kill(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                return
            time.sleep(0.05)

    def restart(self, service: str) -> None:
        result = self.mlops("restart", service, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def stack_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLOPS_KAFKA_BOOTSTRAP", "MLOPS_REDIS_URL")}
    env.update({
        "MLOPS_HOME": str(home),
        # The session's stack runs without auth; tests/integration/test_auth.py runs one with it.
        "MLOPS_AUTH_ENABLED": "false",
        "MLOPS_DRIFT_RETRAINING_POLICY": str(Path(__file__).with_name("retraining_policy.yaml")),
        "MLOPS_EMBEDDED_KAFKA_PORT": str(KAFKA_PORT),
        "MLOPS_EMBEDDED_REDIS_PORT": str(REDIS_PORT),
    })
    for service, (http, grpc) in TEST_PORTS.items():
        env[f"MLOPS_{env_name(service)}_HTTP_PORT"] = str(http)
        env[f"MLOPS_{env_name(service)}_GRPC_PORT"] = str(grpc)
    return env


