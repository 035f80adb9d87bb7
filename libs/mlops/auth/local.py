"""The local stack's tokens: ``mlops up`` makes an admin token for the person at the keyboard and, for each
service that calls a peer, a token of its own with the least role its calls need
(:data:`mlops.auth.policy.SERVICE_ROLES`), all under ``$MLOPS_HOME/auth`` (mode 0600). Each service process
gets only its own token (``MLOPS_SERVICE_TOKEN``); none gets an admin one."""

from __future__ import annotations

import os
from pathlib import Path

from mlops.auth.policy import SERVICE_ROLES
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


#: The one token all services shared before each had its own (an admin one): revoked by ``mlops up``.
LEGACY_SERVICES_TOKEN = "platform-services"


def service_token_file(settings: PlatformSettings, service: str) -> Path:
    return auth_dir(settings) / "services" / f"{service}.token"


def service_token_name(service: str) -> str:
    return f"svc-{service}"


def ensure_local_tokens(settings: PlatformSettings) -> tuple[Path, Path]:
    """``(tokens file, admin token file)``; creates what is missing: the admin token and each service's own
    token with its role (re-made when its role changed); revokes the old shared admin service token."""
    store = TokenStore(tokens_file(settings))
    admin_file = auth_dir(settings) / "admin.token"
    active = {r.name: r for r in store.list() if not r.revoked_at}
    if "local-admin" not in active or not admin_file.exists():
        _, token = store.create("local-admin", "admin")
        _write_secret(admin_file, token)
    for service, role in SERVICE_ROLES.items():
        name, path = service_token_name(service), service_token_file(settings, service)
        current = active.get(name)
        if current is not None and current.role == role and path.exists():
            continue
        if current is not None:
            store.revoke(current.id)
        _, token = store.create(name, role)
        _write_secret(path, token)
    legacy = active.get(LEGACY_SERVICES_TOKEN)
    if legacy is not None:
        store.revoke(legacy.id)
    (auth_dir(settings) / "service.token").unlink(missing_ok=True)
    return store.path, admin_file


def service_token(settings: PlatformSettings, service: str) -> str | None:
    """``service``'s own token, or None for a service that calls no peer (it gets none)."""
    path = service_token_file(settings, service)
    return path.read_text().strip() if service in SERVICE_ROLES and path.exists() else None


def local_token(settings: PlatformSettings | None = None) -> str | None:
    """The token the CLI and the demo use: ``MLOPS_TOKEN``, else the local admin token if there is one."""
    if os.environ.get("MLOPS_TOKEN"):
        return os.environ["MLOPS_TOKEN"]
    settings = settings or PlatformSettings()
    path = auth_dir(settings) / "admin.token"
    return path.read_text().strip() if path.exists() else None


def own_service_token() -> str | None:
    """The token this service presents to its peers (``MLOPS_SERVICE_TOKEN``), whitespace dropped (a Secret
    or file made with ``echo`` ends in a newline); None when unset. The one place it is read."""
    token = (os.environ.get("MLOPS_SERVICE_TOKEN") or "").strip()
    return token or None


def service_headers() -> dict[str, str]:
    """HTTP headers a service sends when it calls another service's REST API."""
    token = own_service_token()
    return {"authorization": f"Bearer {token}"} if token else {}
