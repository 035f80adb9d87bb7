"""Safe by default: a real service process bound to every interface with no tokens file refuses to start
(every caller would be an anonymous admin) unless auth is turned off on purpose; and the shipped
deployments (docker-compose.yml, deploy/k8s) run with auth on, a tokens file mounted into every service."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from mlops.auth.policy import SERVICE_ROLES
from mlops.auth.tokens import TokenStore
from mlops.settings import SERVICES
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


def _compose_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The platform's services in a compose file (those that run ``python -m services.<name>``)."""
    return {name: svc for name, svc in compose["services"].items()
            if "services." in " ".join(str(c) for c in svc.get("command") or ())}


def test_the_compose_file_runs_every_service_with_auth_on() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = _compose_services(compose)
    assert set(services) == set(SERVICES), services.keys()
    for name, svc in services.items():
        env = svc["environment"]
        assert str(env.get("MLOPS_AUTH_ENABLED", "true")).lower() != "false", name
        assert "MLOPS_SERVICE_TOKEN" not in env and "MLOPS_TOKEN" not in env, f"{name}: a token in the file"
        tokens_dir = str(Path(env["MLOPS_AUTH_TOKENS_FILE"]).parent)
        assert any(str(v).endswith(f":{tokens_dir}:ro") for v in svc["volumes"]), (name, svc["volumes"])
        assert str(svc["env_file"]).endswith(f"/env/{name}.env"), (name, svc.get("env_file"))


def test_compose_gives_each_service_its_own_least_role_token(tmp_path: Path) -> None:
    # scripts/bootstrap installs it: a missing binary is a broken set-up, not a reason to skip.
    assert shutil.which("docker-compose") is not None, "docker-compose is not installed; run ./scripts/bootstrap"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}, "MLOPS_SECRETS_DIR": str(tmp_path)}
    subprocess.run([str(ROOT / "scripts" / "compose-secrets")], env=env, check=True, capture_output=True,
                   timeout=120)
    rendered = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"], env=env,
                              cwd=ROOT, check=True, capture_output=True, text=True, timeout=120).stdout
    store = TokenStore(tmp_path / "tokens" / "tokens.json")
    assert oct(store.path.stat().st_mode & 0o777) == oct(0o644)  # hashes only; the services' uid reads it
    for name, svc in _compose_services(yaml.safe_load(rendered)).items():
        token = svc["environment"].get("MLOPS_SERVICE_TOKEN")
        if name not in SERVICE_ROLES:
            assert token is None, f"{name} calls no peer but gets a token"
            continue
        principal = store.verify(token or "")
        assert principal is not None and principal.role == SERVICE_ROLES[name], (name, principal)
    for env_file in (tmp_path / "env").iterdir():
        assert env_file.stat().st_mode & 0o077 == 0, f"{env_file} is readable by others"
    assert not list((tmp_path / "tokens").glob("*.token")), "a token beside the hashes that every service mounts"
