"""Inference service: Open Inference Protocol (KServe V2) REST and gRPC over the registry's models."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from tritonclient.grpc import service_pb2_grpc

from mlops import grpc_util
from mlops.bus import topics
from mlops.service import Service, run_main
from mlops.settings import PlatformSettings, peer_address, service_settings
from mlops.v1 import inference_pb2_grpc
from services.inference import consumers, grpc_api, http
from services.inference.core import DataPlane
from services.inference.registry_client import RegistryClient
from services.inference.repository import ModelRepository
from services.inference.settings import InferenceSettings


def lifecycle_group() -> str:
    """Every inference process must see every lifecycle event, so each gets its own consumer group."""
    return f"inference.{topics.MODELS_LIFECYCLE}.{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def main() -> None:
    settings = PlatformSettings()
    config = InferenceSettings()
    service = Service(settings, service_settings("inference"))
    registry_channel = grpc_util.channel(peer_address("registry"))
    repository = ModelRepository(RegistryClient(registry_channel, config.registry_timeout_s), config)
    plane = DataPlane(repository)

    service.add_http(http.router(plane))
    service.add_grpc(
        lambda server: service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            grpc_api.InferenceServicer(plane), server
        )
    )
    service.add_grpc(
        lambda server: inference_pb2_grpc.add_InferenceAdminServicer_to_server(grpc_api.AdminServicer(plane), server)
    )
    service.add_consumer(topics.MODELS_LIFECYCLE, consumers.on_lifecycle(repository), group=lifecycle_group())
    service.add_task(repository.run)
    service.add_readiness("registry_synced", _is_synced(repository))
    service.on_stop(repository.close)
    service.on_stop(registry_channel.close)
    await service.run()


def _is_synced(repository: ModelRepository) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return repository.synced.is_set()

    return check


def cli() -> None:
    run_main("inference", main)


if __name__ == "__main__":
    cli()
