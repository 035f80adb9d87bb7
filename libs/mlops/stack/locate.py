"""Where the local stack answers, for a program outside it: the CLI, the Python client (``Client()``), the
admin commands. One answer for all of them.

Each address comes from this shell's ``MLOPS_*`` environment when it is set there, else from the environment
``mlops up`` recorded in ``$MLOPS_HOME/run/stack.json`` (so a stack started on moved ports, with
``MLOPS_<SERVICE>_HTTP_PORT`` or ``MLOPS_EMBEDDED_KAFKA_PORT``, is found without exporting them again), else
the defaults. The token is :func:`mlops.auth.local.local_token`'s: ``MLOPS_TOKEN``, else the local admin
token under ``$MLOPS_HOME/auth``.
"""

from __future__ import annotations

import os

from mlops.auth.local import local_token
from mlops.settings import PlatformSettings, env_name, service_settings
from mlops.stack import procs

__all__ = ["http_url", "kafka_bootstrap", "local_token", "recorded_env"]

_ANY_INTERFACE = ("0.0.0.0", "::", "")


def recorded_env(settings: PlatformSettings | None = None) -> dict[str, str]:
    """The ``MLOPS_*`` environment the stack under ``$MLOPS_HOME`` was started with (empty when there is none,
    or when its state file cannot be read: then the shell's settings and the defaults stand)."""
    home = (settings or PlatformSettings()).home
    try:
        return {k: v for k, v in procs.load(home).env.items() if k.startswith("MLOPS_") and isinstance(v, str)}
    except (OSError, ValueError, TypeError):
        return {}


def _setting(name: str, recorded: dict[str, str]) -> str | None:
    return os.environ.get(name) or recorded.get(name) or None


def http_url(service: str, settings: PlatformSettings | None = None) -> str:
    """``http://host:port`` of ``service``'s REST API (a service bound to every interface is called on
    loopback)."""
    settings = settings or PlatformSettings()
    recorded = recorded_env(settings)
    host = _setting("MLOPS_HOST", recorded) or settings.host
    host = "127.0.0.1" if host in _ANY_INTERFACE else host
    port = _setting(f"MLOPS_{env_name(service)}_HTTP_PORT", recorded)
    return f"http://{host}:{int(port) if port else service_settings(service).http_port}"


def kafka_bootstrap(settings: PlatformSettings | None = None) -> str:
    """The broker the stack uses: this shell's ``MLOPS_KAFKA_BOOTSTRAP``, else the one ``mlops up`` recorded
    (the embedded broker on whatever port it was given), else the default."""
    settings = settings or PlatformSettings()
    return _setting("MLOPS_KAFKA_BOOTSTRAP", recorded_env(settings)) or settings.kafka_bootstrap
