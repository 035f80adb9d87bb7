"""The CLI and ``Client()`` find the stack the same way: this shell's settings, else what ``mlops up`` recorded
under ``$MLOPS_HOME``, else the defaults; the token from ``MLOPS_TOKEN``, else the local admin token."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.cli.common import auth_headers, url
from mlops.client import Client
from mlops.settings import DEFAULT_PORTS
from mlops.stack import locate, procs

RECORDED = {"MLOPS_INGEST_HTTP_PORT": "25801", "MLOPS_BANDIT_ROUTER_HTTP_PORT": "25808",
            "MLOPS_KAFKA_BOOTSTRAP": "127.0.0.1:25792", "MLOPS_HOST": "0.0.0.0", "OTEL_SERVICE_NAME": "x"}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("MLOPS_KAFKA_BOOTSTRAP", "MLOPS_HOST", "MLOPS_TOKEN", "MLOPS_INGEST_HTTP_PORT",
                 "MLOPS_BANDIT_ROUTER_HTTP_PORT", "MLOPS_FEEDBACK_HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    return tmp_path


def test_without_a_stack_the_defaults(home: Path) -> None:
    assert locate.http_url("ingest") == f"http://127.0.0.1:{DEFAULT_PORTS['ingest'][0]}"
    assert locate.local_token() is None and auth_headers() == {}
    with Client() as client:
        assert client.kafka_bootstrap == "127.0.0.1:19092"


def test_a_stack_on_moved_ports_is_found_from_its_state(home: Path) -> None:
    procs.save(home, procs.StackState(env=RECORDED))
    (home / "auth").mkdir()
    (home / "auth" / "admin.token").write_text("admin-secret\n")
    assert locate.http_url("ingest") == "http://127.0.0.1:25801"  # bound to every interface: called on loopback
    assert url("bandit-router", "/v1/endpoints") == "http://127.0.0.1:25808/v1/endpoints"
    assert locate.http_url("feedback") == f"http://127.0.0.1:{DEFAULT_PORTS['feedback'][0]}"  # not recorded
    assert auth_headers() == {"authorization": "Bearer admin-secret"}
    with Client() as client:
        assert client.kafka_bootstrap == "127.0.0.1:25792"


def test_the_shell_wins_over_the_recorded_stack(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    procs.save(home, procs.StackState(env=RECORDED))
    (home / "auth").mkdir()
    (home / "auth" / "admin.token").write_text("admin-secret\n")
    monkeypatch.setenv("MLOPS_INGEST_HTTP_PORT", "25999")
    monkeypatch.setenv("MLOPS_KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    monkeypatch.setenv("MLOPS_TOKEN", "mine")
    assert locate.http_url("ingest") == "http://127.0.0.1:25999"
    assert locate.kafka_bootstrap() == "10.0.0.1:9092"
    assert locate.local_token() == "mine"


def test_an_unreadable_state_file_falls_back_to_the_settings(home: Path) -> None:
    procs.state_path(home).parent.mkdir(parents=True)
    procs.state_path(home).write_text("{not json")
    assert locate.recorded_env() == {}
    assert locate.http_url("ingest") == f"http://127.0.0.1:{DEFAULT_PORTS['ingest'][0]}"
