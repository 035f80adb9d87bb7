"""One stack with auth on (as `mlops up` starts it by default) for the adversarial suite, started once per
test session on ports of its own, with a token per role. Every test here attacks it from the wrong side."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from mlops.auth.tokens import TokenStore
from mlops.settings import SERVICES, env_name
from tests.integration.stack import PORT_BASE, stack_env

BASE = PORT_BASE + 700
HTTP = {s: BASE + 1 + i for i, s in enumerate(SERVICES)}
GRPC = {s: BASE + 11 + i for i, s in enumerate(SERVICES)}
KAFKA_PORT = BASE + 92
REDIS_PORT = BASE + 79


@dataclass
class SecureStack:
    """A handle on the auth-on stack: its addresses, its admin token, and tokens minted per role."""

    home: Path
    env: dict[str, str]
    admin: str
    _tokens: dict[str, tuple[str, str]] = field(default_factory=dict)

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{HTTP[service]}{path}"

    def grpc(self, service: str) -> str:
        return f"127.0.0.1:{GRPC[service]}"

    def token(self, role: str) -> str:
        """A token of ``role``, minted once per session (its id: :meth:`token_id`)."""
        if role not in self._tokens:
            record, token = TokenStore(self.home / "auth" / "tokens.json").create(
                f"sec-{role}-{uuid.uuid4().hex[:6]}", role)
            self._tokens[role] = (record.id, token)
        return self._tokens[role][1]

    def token_id(self, role: str) -> str:
        self.token(role)
        return self._tokens[role][0]

    def headers(self, role: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.admin if role == 'admin' else self.token(role)}"}

    def http(self, role: str | None = None, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(timeout=timeout, headers=self.headers(role) if role else {})

    def mlops(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlops.cli.main", *args], env=self.env, text=True,
                              capture_output=True, check=check, timeout=timeout)


@pytest.fixture(scope="session")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    home = tmp_path_factory.mktemp("secure-home")
    env = stack_env(home)
    env.update({
        "MLOPS_AUTH_ENABLED": "true",
        "MLOPS_RATE_LIMIT_PER_S": "100000",  # the fuzz runs fast; rate limits have their own tests
        "MLOPS_EMBEDDED_KAFKA_PORT": str(KAFKA_PORT),
        "MLOPS_EMBEDDED_REDIS_PORT": str(REDIS_PORT),
    })
    for service in SERVICES:
        env[f"MLOPS_{env_name(service)}_HTTP_PORT"] = str(HTTP[service])
        env[f"MLOPS_{env_name(service)}_GRPC_PORT"] = str(GRPC[service])
    cli = [sys.executable, "-m", "mlops.cli.main"]
    up = subprocess.run([*cli, "up", "--timeout", "240"], env=env, text=True, capture_output=True, timeout=400)
    try:
        if up.returncode != 0:
            pytest.fail(f"mlops up failed:\n{up.stdout}\n{up.stderr}")
        state = json.loads((home / "run" / "stack.json").read_text())
        env.update(state["env"])
        admin = (home / "auth" / "admin.token").read_text().strip()
        yield SecureStack(home=home, env=env, admin=admin)
    finally:
        down = subprocess.run([*cli, "down"], env=env, text=True, capture_output=True, timeout=180)
        print(down.stdout, down.stderr)
