"""All configuration, read from the environment (prefix ``MLOPS_``) by pydantic-settings, in one place.

Shared settings live in :class:`PlatformSettings`; each service has :class:`ServiceSettings`
(prefix ``MLOPS_<SERVICE>_``) for its ports. Objects take settings in their constructors;
nothing reads the environment elsewhere.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]

#: service name -> (HTTP port, gRPC port): the contract's defaults.
DEFAULT_PORTS: dict[str, tuple[int, int]] = {
    "ingest": (8101, 9101),
    "feature": (8102, 9102),
    "trainer": (8103, 9103),
    "registry": (8104, 9104),
    "inference": (8105, 9105),
    "feedback": (8106, 9106),
    "drift": (8107, 9107),
    "bandit-router": (8108, 9108),
}
SERVICES: tuple[str, ...] = tuple(DEFAULT_PORTS)


class PlatformSettings(BaseSettings):
    """Settings every service shares."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore")

    home: Path = Field(REPO_ROOT / ".mlops", description="State: registry db, artifacts, offline store, logs.")
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers, comma separated.")
    redis_url: str = Field("redis://127.0.0.1:16379/0", description="Redis for online features and state.")
    redis_max_connections: int = Field(128, description="Redis connections per service process.")
    registry_db_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite under home.")
    triton_url: str | None = Field(None, description="Optional Triton server for the inference backend.")
    auth_tokens_file: Path | None = Field(None, description="Bearer tokens file (hashed); unset: auth off.")
    auth_enabled: bool = Field(True, description="`mlops up` turns on bearer-token auth with local tokens.")
    service_token: str | None = Field(None, description="The token services present when they call each other.")
    rate_limit_per_s: int = Field(1000, description="Requests per second per token (0: unlimited).")
    max_body_bytes: int = Field(32 * 1024 * 1024, description="Largest REST request body any service accepts.")
    model_ops_allow: str = Field(
        "", description="TorchScript ops a model artifact may use beyond the built-in allowlist of pure tensor "
        "operations, comma separated (`aten::name`); see docs/security.md. File, storage and Python ops are "
        "never allowed."
    )
    model_inspect_timeout_s: float = Field(
        60.0, gt=0, description="Longest the inspection of one model artifact (a subprocess) may take."
    )
    topic_prefix: str = Field("", description="Prefix for every Kafka topic name.")
    topic_partitions: int = Field(4, description="Partitions for each topic the platform creates.")
    kafka_idempotence: bool = Field(
        False, description="Idempotent producer; on for Apache Kafka, off for the embedded broker."
    )
    kafka_acks: str = Field("all", description="Producer acks.")
    kafka_linger_ms: int = Field(0, description="Producer linger; 0 keeps single awaited sends fast.")
    kafka_fetch_max_wait_ms: int = Field(
        50, description="Longest a consumer's fetch waits at the broker for new records (a caught-up consumer's "
        "delivery latency: the embedded broker held fetches ~77 ms at the client's default of 500, 3-5 ms at 50)."
    )
    consumer_session_timeout_ms: int = Field(6000, description="Consumer group session timeout.")
    consumer_heartbeat_interval_ms: int = Field(1000, description="Consumer group heartbeat interval.")
    consumer_rebalance_timeout_ms: int = Field(6000, description="Consumer group rebalance timeout.")
    dedup_ttl_s: int = Field(7 * 24 * 3600, description="How long processed event_ids are remembered.")
    host: str = Field("127.0.0.1", description="Interface the services bind to.")
    embedded_kafka_port: int = Field(19092, description="Port of the embedded broker `mlops up` starts.")
    embedded_redis_port: int = Field(16379, description="Port of the redis-server `mlops up` starts.")
    log_level: str = Field("INFO", description="Python logging level.")

    @property
    def registry_url(self) -> str:
        return self.registry_db_url or f"sqlite:///{self.home / 'registry.db'}"


class ServiceSettings(BaseSettings):
    """One service's ports and peers. Build with :func:`service_settings`."""

    model_config = SettingsConfigDict(extra="ignore")

    name: str
    http_port: int
    grpc_port: int
    shutdown_grace_s: float = 10.0
    #: The host (DNS name or IP, no port) other services dial to reach this one, ``MLOPS_<SERVICE>_ADDRESS``:
    #: on Kubernetes its Service name. Unset: the local host, as when every service shares one machine.
    address: str | None = None


def env_name(service: str) -> str:
    """``bandit-router`` -> ``BANDIT_ROUTER``: the service's part of its env var names."""
    return service.upper().replace("-", "_")


def service_settings(service: str) -> ServiceSettings:
    """Settings of ``service`` from ``MLOPS_<SERVICE>_HTTP_PORT`` / ``_GRPC_PORT``, else the defaults."""
    http, grpc = DEFAULT_PORTS[service]

    class _Settings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix=f"MLOPS_{env_name(service)}_", extra="ignore")
        name: str = service
        http_port: int = http
        grpc_port: int = grpc

    return _Settings()


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a listener reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to anything


def peer_address(service: str, kind: str = "grpc", host: str | None = None) -> str:
    """``host:port`` of another service's gRPC or HTTP listener, from the same env vars it reads.

    The host is the peer's ``MLOPS_<SERVICE>_ADDRESS`` when set (a Kubernetes Service name: each pod has its
    own loopback), else ``host`` or this process's ``MLOPS_HOST``: one machine, or compose's shared network
    namespace, where a service bound to every interface is reached on loopback."""
    s = service_settings(service)
    port = s.grpc_port if kind == "grpc" else s.http_port
    if s.address:
        target = s.address
    else:
        target = host or PlatformSettings().host
        target = "127.0.0.1" if target in ("0.0.0.0", "::", "") else target
    return f"[{target}]:{port}" if ":" in target and not target.startswith("[") else f"{target}:{port}"
