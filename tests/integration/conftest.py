"""The embedded stack (broker, redis-server, eight services), started once per test session with
``mlops up`` on ports of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.otlp import OtlpReceiver
from tests.integration.stack import PORT_BASE, Stack, stack_env


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    """Receives the spans of every process of the session's stack."""
    receiver = OtlpReceiver(PORT_BASE + 989)
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("mlops-home")
    env = stack_env(home)
    env.update({
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    })
    only = ["--only", os.environ["MLOPS_TEST_ONLY"]] if os.environ.get("MLOPS_TEST_ONLY") else []
    up = subprocess.run([sys.executable, "-m", "mlops.cli.main", "up", "--timeout", "240", *only], env=env, text=True,
                        capture_output=True, timeout=400)
    if up.returncode != 0:
        subprocess.run([sys.executable, "-m", "mlops.cli.main", "down"], env=env, timeout=120)
        pytest.fail(f"mlops up failed:\n{up.stdout}\n{up.stderr}")
    state = json.loads((home / "run" / "stack.json").read_text())
    env.update(state["env"])
    # The test process talks to the same stack: same ports, same broker and redis.
    os.environ.update({k: v for k, v in env.items() if k.startswith("MLOPS_")})
    s = Stack(home=home, env=env)
    try:
        yield s
    finally:
        down = subprocess.run([sys.executable, "-m", "mlops.cli.main", "down"], env=env, text=True,
                              capture_output=True, timeout=180)
        print(down.stdout, down.stderr)
