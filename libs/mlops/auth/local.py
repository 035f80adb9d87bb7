"""The local stack's tokens: ``mlops up`` makes an admin token for the person at the keyboard and a token
the services present to each other, both under ``$MLOPS_HOME/auth`` (mode 0600)."""

from __future__ import annotations

import os
from pathlib import Path

from mlops.auth.tokens import TokenStore
from mlops.settings import PlatformSettings


def auth_dir(settings: PlatformSettings) -> Path:
    return settings.home / "auth"


def tokens_file(settings: PlatformSettings) -> Path:
    return settings.auth_tokens_file or auth_dir(settings) / "tokens.json"


def _write_secret(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")


def ensure_local_tokens(settings: PlatformSettings) -> tuple[Path, str, Path]:
    """``(tokens file, service token, admin token file)``; creates what is missing."""
    store = TokenStore(tokens_file(settings))
    admin_file = auth_dir(settings) / "admin.token"
    service_file = auth_dir(settings) / "service.token"
    active = {r.name for r in store.list() if not r.revoked_at}
    if "local-admin" not in active or not admin_file.exists():
        _, token = store.create("local-admin", "admin")
        _write_secret(admin_file, token)
    if "platform-services" not in active or not service_file.exists():
        _, token = store.create("platform-services", "admin")
        _write_secret(service_file, token)
    return store.path, service_file.read_text().strip(), admin_file


def local_token(settings: PlatformSettings | None = None) -> str | None:
    """The token the CLI and the demo use: ``MLOPS_TOKEN``, else the local admin token if there is one."""
    if os.environ.get("MLOPS_TOKEN"):
        return os.environ["MLOPS_TOKEN"]
    settings = settings or PlatformSettings()
    path = auth_dir(settings) / "admin.token"
    return path.read_text().strip() if path.exists() else None


def service_headers() -> dict[str, str]:
    """HTTP headers a service sends when it calls another service's REST API."""
    token = os.environ.get("MLOPS_SERVICE_TOKEN")
    return {"authorization": f"Bearer {token}"} if token else {}
