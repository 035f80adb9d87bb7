"""The CLI's token commands audit to the running stack: ``mlops tokens create|revoke`` run from a shell
that knows only ``MLOPS_HOME`` (not the moved ports the stack was started on) publish their records to the
stack's broker, read from its state file, so they reach the stack's audit trail as published records (not
only the local fallback file a stack that is down gets)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.security.conftest import SecureStack


def _shell_env(secure: SecureStack) -> dict[str, str]:
    """A fresh shell on the stack's machine: MLOPS_HOME and nothing of the stack's moved ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env["MLOPS_HOME"] = str(secure.home)
    return env


def _published(secure: SecureStack, action: str, target: str) -> dict | None:
    """The audit entry of ``action`` on ``target`` that came through the broker (its event id is the
    producer's ``audit:...``; the CLI's local fallback writes ``cli:...``)."""
    with secure.http("admin") as http:
        entries = http.get(secure.url("registry", "/v1/audit"), params={"action": action, "target": target}
                           ).json()["entries"]
    return next((e for e in entries if str(e.get("event_id", "")).startswith("audit:")), None)


def test_token_commands_publish_to_the_running_stack(secure: SecureStack) -> None:
    env = _shell_env(secure)
    created = subprocess.run([sys.executable, "-m", "mlops.cli.main", "tokens", "create", "cli-audit", "--role",
                              "viewer"], env=env, text=True, capture_output=True, timeout=120, check=True)
    token_id = next(line.split("token ", 1)[1].split()[0] for line in created.stdout.splitlines()
                    if line.startswith("token "))
    subprocess.run([sys.executable, "-m", "mlops.cli.main", "tokens", "revoke", token_id], env=env, text=True,
                   capture_output=True, timeout=120, check=True)
    for action in ("tokens.create", "tokens.revoke"):
        deadline = time.monotonic() + 60  # the audit consumer appends what the broker delivers
        entry = _published(secure, action, f"token:{token_id}")
        while entry is None and time.monotonic() < deadline:
            time.sleep(0.5)
            entry = _published(secure, action, f"token:{token_id}")
        assert entry is not None, f"{action} of token {token_id} never reached the stack's audit trail as published"
        assert entry["actor"].startswith("cli:")
