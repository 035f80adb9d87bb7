"""Inference service: Open Inference Protocol (KServe V2) REST and gRPC over the registry's models."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable

from tritonclient.grpc import service_pb2_grpc

from mlops import grpc_util
from mlops.bus import topics
from mlops.modelguard import ModelPolicy
from mlops.service import Service, run_main
from mlops.settings import PlatformSettings, peer_address, service_settings
from mlops.v1 import inference_pb2_grpc
from services.inference import consumers, grpc_api, http
from services.inference.core import DataPlane
from services.inference.prediction_log import PredictionLog
from services.inference.registry_client import LocalSource, RegistryClient
from services.inference.repository import ModelRepository
from services.inference.settings import InferenceSettings
from services.inference.triton import TritonBackend


def lifecycle_group() -> str:
    """Every inference process must see every lifecycle event, so each gets its own consumer group."""
    return f"inference.{topics.MODELS_LIFECYCLE}.{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def main() -> None:
    settings = PlatformSettings()
    config = InferenceSettings()
    local = config.model_repository is not None
    # Kafka is needed for models.lifecycle (registry source) and for the prediction log.
    service = Service(settings, service_settings("inference"), kafka=not local or config.prediction_log)

    triton = None
    if settings.triton_url:
        triton = TritonBackend(settings.triton_url, config.triton_repository or settings.home / "triton-models",
                               timeout_s=config.triton_timeout_s, load_timeout_s=config.triton_load_timeout_s)
    models = ModelPolicy.from_settings(settings)  # what a model artifact may run (docs/security.md)
    if config.model_repository is not None:
        repository = ModelRepository(LocalSource(config.model_repository), config, triton, models)
    else:
        registry_channel = grpc_util.channel(peer_address("registry"))
        repository = ModelRepository(RegistryClient(registry_channel, config.registry_timeout_s), config, triton,
                                     models)
        service.add_consumer(topics.MODELS_LIFECYCLE, consumers.on_lifecycle(repository), group=lifecycle_group())
        service.on_stop(registry_channel.close)

    prediction_log = None
    if config.prediction_log and service.producer is not None:
        prediction_log = PredictionLog(
            service.producer, max_rows=config.prediction_log_queue, batch_rows=config.prediction_log_batch
        )
        service.add_task(prediction_log.run)
    plane = DataPlane(repository, prediction_log)

    service.add_http(http.router(plane, settings.max_body_bytes))
    service.add_grpc(
        lambda server: service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            grpc_api.InferenceServicer(plane), server
        )
    )
    service.add_grpc(
        lambda server: inference_pb2_grpc.add_InferenceAdminServicer_to_server(grpc_api.AdminServicer(plane), server)
    )
    service.add_task(repository.run)
    service.add_readiness("models_synced", _is_synced(repository))
    # In-flight requests are done when this runs (the transports stopped first): flush their records.
    if prediction_log is not None:
        service.on_stop(prediction_log.close)
    service.on_stop(repository.close)
    await service.run()


def _is_synced(repository: ModelRepository) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return repository.synced.is_set()

    return check


def cli() -> None:
    config = InferenceSettings()
    if config.uvloop:
        _use_uvloop()
    if config.gil_switch_interval_us:
        sys.setswitchinterval(config.gil_switch_interval_us / 1e6)
    run_main("inference", main)


def _use_uvloop() -> None:
    """uvloop under asyncio.run (grpc.aio and uvicorn both run on it): less event-loop time per request."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":
    cli()
