"""Safe by default: a service bound beyond loopback refuses to start without a tokens file unless auth is
turned off on purpose; peers are dialled at their own address setting when one is given."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mlops.safe_start import open_warning, startup_refusal
from mlops.service import run_main
from mlops.settings import PlatformSettings, is_loopback, peer_address


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "mlops-registry.mlops.svc", ""])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_loopback_without_tokens_starts() -> None:
    assert startup_refusal(PlatformSettings(host="127.0.0.1", auth_tokens_file=None, auth_enabled=True)) is None


def test_every_interface_without_tokens_is_refused() -> None:
    reason = startup_refusal(PlatformSettings(host="0.0.0.0", auth_tokens_file=None, auth_enabled=True))
    assert reason is not None
    assert "refusing to start" in reason and "MLOPS_AUTH_TOKENS_FILE" in reason and "MLOPS_AUTH_ENABLED=false" in reason


def test_a_missing_tokens_file_is_refused(tmp_path: Path) -> None:
    settings = PlatformSettings(host="10.1.2.3", auth_tokens_file=tmp_path / "absent.json", auth_enabled=True)
    reason = startup_refusal(settings)
    assert reason is not None and "does not exist" in reason


def test_a_tokens_file_lets_it_start(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text('{"tokens": []}')
    assert startup_refusal(PlatformSettings(host="0.0.0.0", auth_tokens_file=tokens, auth_enabled=True)) is None


def test_auth_off_on_purpose_starts_with_a_warning() -> None:
    settings = PlatformSettings(host="0.0.0.0", auth_tokens_file=None, auth_enabled=False)
    assert startup_refusal(settings) is None
    warning = open_warning(settings)
    assert warning is not None and "anonymous admin" in warning
    assert open_warning(PlatformSettings(host="127.0.0.1", auth_tokens_file=None, auth_enabled=False)) is None


def test_run_main_exits_non_zero_with_one_log_line(monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MLOPS_HOST", "0.0.0.0")
    monkeypatch.delenv("MLOPS_AUTH_TOKENS_FILE", raising=False)
    monkeypatch.delenv("MLOPS_AUTH_ENABLED", raising=False)

    async def main() -> None:
        raise AssertionError("the service must not start")

    with caplog.at_level(logging.CRITICAL), pytest.raises(SystemExit) as exit_info:
        run_main("ingest", main)
    assert exit_info.value.code == 2
    refusals = [r for r in caplog.records if "refusing to start" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.CRITICAL


def _clear_peer_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLOPS_HOST", "MLOPS_REGISTRY_ADDRESS", "MLOPS_REGISTRY_HTTP_PORT", "MLOPS_REGISTRY_GRPC_PORT"):
        monkeypatch.delenv(var, raising=False)


def test_peer_address_defaults_to_this_host(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_peer_env(monkeypatch)
    assert peer_address("registry") == "127.0.0.1:9104"
    monkeypatch.setenv("MLOPS_HOST", "0.0.0.0")
    assert peer_address("registry", "http") == "127.0.0.1:8104"
    monkeypatch.setenv("MLOPS_HOST", "10.0.0.5")
    assert peer_address("registry") == "10.0.0.5:9104"
    monkeypatch.setenv("MLOPS_HOST", "::1")
    assert peer_address("registry") == "[::1]:9104"


def test_peer_address_setting_names_the_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_peer_env(monkeypatch)
    monkeypatch.setenv("MLOPS_HOST", "0.0.0.0")
    monkeypatch.setenv("MLOPS_REGISTRY_ADDRESS", "mlops-registry.mlops.svc")
    monkeypatch.setenv("MLOPS_REGISTRY_GRPC_PORT", "9999")
    assert peer_address("registry") == "mlops-registry.mlops.svc:9999"
    assert peer_address("registry", "http") == "mlops-registry.mlops.svc:8104"
    assert peer_address("feedback") == "127.0.0.1:9106", "a peer without its own address keeps the default"
