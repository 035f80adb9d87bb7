"""Bandit router: the predict endpoint that splits traffic between model variants and learns from rewards."""

from __future__ import annotations

from mlops import grpc_util
from mlops.bus import topics
from mlops.bus.journal import Journal
from mlops.service import Service, run_main
from mlops.settings import PlatformSettings, peer_address, service_settings
from mlops.v1 import bandit_router_pb2_grpc
from services.bandit_router import consumers, grpc_api, http
from services.bandit_router.clients import FeatureLookup, InferenceCaller, RegistryLookup
from services.bandit_router.core import Router
from services.bandit_router.experiments import Controller
from services.bandit_router.settings import RouterSettings
from services.bandit_router.store import RouterStore


async def main() -> None:
    settings = PlatformSettings()
    config = RouterSettings()
    service = Service(settings, service_settings("bandit-router"))
    journal = Journal(settings.home / "journal" / "bandit-router") if config.publish_journal else None
    channels = {peer: grpc_util.channel(peer_address(peer)) for peer in ("registry", "feature", "inference")}
    router = Router(
        store=RouterStore(service.redis, settings.dedup_ttl_s),
        registry=RegistryLookup(channels["registry"], config.alias_cache_ttl_s, config.registry_timeout_s),
        features=FeatureLookup(channels["feature"], config.feature_timeout_s),
        inference=InferenceCaller(channels["inference"], config.inference_timeout_s),
        producer=service.producer,
        settings=config,
        journal=journal,
    )
    controller = Controller(router, service.producer)
    service.add_http(http.router(router))
    service.add_grpc(
        lambda server: bandit_router_pb2_grpc.add_BanditRouterServiceServicer_to_server(
            grpc_api.Servicer(router), server
        )
    )
    service.add_consumer(topics.REWARDS, consumers.on_reward(router))
    service.add_consumer(topics.MODELS_LIFECYCLE, consumers.on_lifecycle(controller), group=config.lifecycle_group)
    service.add_task(controller.run)
    if journal is not None:
        service.add_task(router.sweep_journal)
    service.on_stop(controller.stop)
    service.on_stop(router.drain)
    for ch in channels.values():
        service.on_stop(ch.close)
    await service.run()


def cli() -> None:
    run_main("bandit-router", main)


if __name__ == "__main__":
    cli()
