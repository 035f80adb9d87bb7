"""Registry service: experiments, runs, model versions, stages and verified artifacts (REST + gRPC)."""

from __future__ import annotations

import asyncio

from mlops import console
from mlops.auth import audit, audit_http
from mlops.auth.audit import AuditStore
from mlops.bus import topics
from mlops.modelguard import ModelPolicy
from mlops.service import Service, run_main
from mlops.settings import PlatformSettings, service_settings
from mlops.v1 import registry_pb2_grpc
from services.registry import grpc_api, http
from services.registry.artifacts import ArtifactStore
from services.registry.core import Registry
from services.registry.store import RegistryStore


async def main() -> None:
    settings = PlatformSettings()
    service = Service(settings, service_settings("registry"))
    store = await asyncio.to_thread(RegistryStore, settings.registry_url, ArtifactStore(settings.home / "artifacts"))
    registry = Registry(store, service.producer, models=ModelPolicy.from_settings(settings))
    service.add_http(http.router(registry))
    service.add_http(console.router)  # the web console at /ui
    # The audit trail's append-only store lives beside the registry's own record of stage changes.
    audit_store = AuditStore(settings.home / "audit")
    service.add_http(audit_http.router(audit_store))
    service.add_consumer(topics.AUDIT_LOG, audit.consumer(audit_store, service.redis, settings.dedup_ttl_s))
    service.add_grpc(
        lambda server: registry_pb2_grpc.add_RegistryServiceServicer_to_server(grpc_api.Servicer(registry), server)
    )
    service.add_task(registry.outbox_loop)
    service.add_readiness("database", registry.database_ready)
    service.on_stop(registry.stop)
    service.on_stop(lambda: asyncio.to_thread(store.close))
    await service.run()


def cli() -> None:
    run_main("registry", main)


if __name__ == "__main__":
    cli()
