"""Safe by default: a service that other machines can reach does not start open to every caller.

Without a tokens file the guard lets every caller in as an anonymous admin. That is the local developer's
loop on 127.0.0.1; on any other interface it would hand the platform to the network, so the service
refuses to start unless auth is turned off on purpose (``MLOPS_AUTH_ENABLED=false``)."""

from __future__ import annotations

from mlops.settings import PlatformSettings, is_loopback


def startup_refusal(settings: PlatformSettings) -> str | None:
    """Why a service with these settings must not start, in one line; None when it may."""
    if is_loopback(settings.host) or not settings.auth_enabled:
        return None
    where = f"bound to {settings.host!r}, which is not loopback"
    how = ("create one with `mlops tokens init DIR` and set MLOPS_AUTH_TOKENS_FILE to DIR/auth/tokens.json, "
           "or set MLOPS_AUTH_ENABLED=false to run without auth on purpose")
    if settings.auth_tokens_file is None:
        return f"refusing to start: {where}, and no tokens file (MLOPS_AUTH_TOKENS_FILE) is set, so every " \
               f"caller would be an anonymous admin; {how}"
    if not settings.auth_tokens_file.is_file():
        return f"refusing to start: {where}, and the tokens file {settings.auth_tokens_file} does not exist; {how}"
    return None


def open_warning(settings: PlatformSettings) -> str | None:
    """The warning a service logs when it runs open to the network because auth was turned off."""
    if is_loopback(settings.host) or settings.auth_enabled or settings.auth_tokens_file is not None:
        return None
    return (f"auth is off (MLOPS_AUTH_ENABLED=false) and the service is bound to {settings.host!r}: every caller "
            "that reaches it is an anonymous admin")
