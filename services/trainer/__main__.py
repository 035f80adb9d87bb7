"""Trainer service: training jobs from REST, gRPC and `training.requests`, registered in the registry."""

from __future__ import annotations

from mlops.auth.tokens import TokenStore
from mlops.bus import topics
from mlops.modelguard import ModelPolicy
from mlops.service import Service, run_main
from mlops.settings import PlatformSettings, peer_address, service_settings
from mlops.v1 import trainer_pb2_grpc
from services.trainer import consumers, grpc_api, http
from services.trainer.clients import FeatureClient, RegistryClient, RunTracker
from services.trainer.core import Trainer
from services.trainer.jobs import JobStore
from services.trainer.settings import TrainerSettings


def own_role(settings: PlatformSettings) -> str | None:
    """The role of the trainer's own token (``""``: none or not valid), or None when auth is off."""
    if not settings.auth_enabled or settings.auth_tokens_file is None:
        return None
    principal = TokenStore(settings.auth_tokens_file).verify(settings.service_token or "")
    return principal.role if principal else ""


async def main() -> None:
    settings = PlatformSettings()
    trainer_settings = TrainerSettings()
    service = Service(settings, service_settings("trainer"))
    t = trainer_settings
    features = FeatureClient(peer_address("feature"), t.rpc_timeout_s, t.rpc_attempts)
    registry = RegistryClient(peer_address("registry"), t.rpc_timeout_s, t.rpc_attempts)
    tracker = RunTracker(f"http://{peer_address('registry', 'http')}", t.rpc_timeout_s, t.rpc_attempts)
    trainer = Trainer(JobStore(service.redis), features, registry, tracker, trainer_settings,
                      models=ModelPolicy.from_settings(settings), registers_as=own_role(settings))
    service.add_http(http.router(trainer))
    service.add_grpc(
        lambda server: trainer_pb2_grpc.add_TrainerServiceServicer_to_server(grpc_api.Servicer(trainer), server)
    )
    service.add_consumer(topics.TRAINING_REQUESTS, consumers.on_training_request(trainer))
    service.add_task(trainer.run_workers)
    service.on_stop(trainer.stop)
    service.on_stop(features.close)
    service.on_stop(registry.close)
    service.on_stop(tracker.close)
    await service.run()


def cli() -> None:
    run_main("trainer", main)


if __name__ == "__main__":
    cli()
