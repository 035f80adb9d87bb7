"""The local stack's tokens: an admin token for the person at the keyboard, and for each service that calls
a peer a token of its own with its least role (never admin); the old shared admin service token revoked."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.auth.local import (
    LEGACY_SERVICES_TOKEN,
    ensure_local_tokens,
    own_service_token,
    service_headers,
    service_token,
)
from mlops.auth.policy import SERVICE_ROLES
from mlops.auth.tokens import TokenStore
from mlops.settings import SERVICES, PlatformSettings


def _settings(tmp_path: Path) -> PlatformSettings:
    return PlatformSettings(home=tmp_path, auth_tokens_file=None)


def test_each_service_that_calls_a_peer_gets_its_own_least_role_token(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    tokens, admin_file = ensure_local_tokens(settings)
    store = TokenStore(tokens)
    assert store.verify(admin_file.read_text().strip()).role == "admin"  # type: ignore[union-attr]
    seen = set()
    for service in SERVICES:
        token = service_token(settings, service)
        if service not in SERVICE_ROLES:
            assert token is None
            continue
        principal = store.verify(token or "")
        assert principal is not None and principal.role == SERVICE_ROLES[service] != "admin"
        assert (tmp_path / "auth" / "services" / f"{service}.token").stat().st_mode & 0o077 == 0
        seen.add(token)
    assert len(seen) == len(SERVICE_ROLES)


def test_it_is_idempotent_and_remakes_a_token_whose_role_changed(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    ensure_local_tokens(settings)
    before = {s: service_token(settings, s) for s in SERVICE_ROLES}
    ensure_local_tokens(settings)
    assert {s: service_token(settings, s) for s in SERVICE_ROLES} == before
    store = TokenStore(tmp_path / "auth" / "tokens.json")
    trainer = next(r for r in store.list() if r.name == "svc-trainer")
    store.revoke(trainer.id)  # as if its role had changed or an operator rotated it
    ensure_local_tokens(settings)
    assert service_token(settings, "trainer") != before["trainer"]
    assert store.verify(before["trainer"] or "") is None


def test_the_old_shared_admin_service_token_is_revoked_and_its_file_removed(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = TokenStore(tmp_path / "auth" / "tokens.json")
    _, legacy = store.create(LEGACY_SERVICES_TOKEN, "admin")
    (tmp_path / "auth" / "service.token").write_text(legacy + "\n")
    ensure_local_tokens(settings)
    assert store.verify(legacy) is None
    assert not (tmp_path / "auth" / "service.token").exists()


def test_the_service_token_is_read_in_one_place_without_its_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_SERVICE_TOKEN", "tok-123\n")
    assert own_service_token() == "tok-123" and service_headers() == {"authorization": "Bearer tok-123"}
    monkeypatch.setenv("MLOPS_SERVICE_TOKEN", " \n")
    assert own_service_token() is None and service_headers() == {}
