"""``mlops tokens create|revoke`` publish their audit records to the running stack's broker, read from the
stack's state file, unless the shell names a broker itself; with no stack, the configured one."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.cli.admin_cmds import audit_settings
from mlops.settings import PlatformSettings
from mlops.stack import procs


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MLOPS_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    return tmp_path


def test_the_running_stacks_broker_from_its_state(home: Path) -> None:
    procs.save(home, procs.StackState(env={"MLOPS_KAFKA_BOOTSTRAP": "127.0.0.1:20792"}))
    assert audit_settings(PlatformSettings()).kafka_bootstrap == "127.0.0.1:20792"


def test_no_stack_state_keeps_the_configured_broker(home: Path) -> None:
    settings = PlatformSettings()
    assert audit_settings(settings).kafka_bootstrap == settings.kafka_bootstrap


def test_a_broker_named_in_the_shell_wins(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    procs.save(home, procs.StackState(env={"MLOPS_KAFKA_BOOTSTRAP": "127.0.0.1:20792"}))
    monkeypatch.setenv("MLOPS_KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    assert audit_settings(PlatformSettings()).kafka_bootstrap == "10.0.0.1:9092"
