"""Drift service: streaming drift detection on predictions and labels, alerts on ``drift.alerts``, and the
retraining policy that turns them into ``training.requests``."""

import asyncio
import contextlib
import logging

from mlops.bus import topics
from mlops.service import Service, run_main
from mlops.settings import PlatformSettings, peer_address, service_settings
from mlops.v1 import drift_pb2_grpc
from services.drift import consumers, grpc_api, http, policy
from services.drift.clients import FeedbackQuality, RegistryStages
from services.drift.core import DriftMonitor
from services.drift.references import ReferenceCache, RegistryReferences
from services.drift.retraining import Retrainer, RetrainStore
from services.drift.settings import DriftSettings
from services.drift.store import DriftStore

log = logging.getLogger(__name__)


async def main() -> None:
    settings = PlatformSettings()
    drift = DriftSettings()
    retraining = policy.load(drift.retraining_policy)
    service = Service(settings, service_settings("drift"))
    assert service.producer is not None
    store = DriftStore(
        service.redis, marker_ttl_s=settings.dedup_ttl_s, window=drift.rebuild_window, max_alerts=drift.max_alerts,
        rows_window=drift.data.window,
    )
    registry_refs = RegistryReferences(peer_address("registry"), drift.registry_timeout_s)
    references = ReferenceCache(registry_refs, drift.reference_retry_s)
    monitor = DriftMonitor(store, service.producer, drift, references)
    stages = RegistryStages(peer_address("registry"), drift.registry_timeout_s)
    feedback = FeedbackQuality(peer_address("feedback"), drift.registry_timeout_s)
    retrainer = Retrainer(
        retraining, RetrainStore(service.redis, ttl_s=settings.dedup_ttl_s), service.producer,
        stage_of=stages, recent_outcomes=store.outcomes, versions=store.versions, feedback_quality=feedback,
    )
    service.add_http(http.router(monitor, retrainer))
    servicer = grpc_api.Servicer(monitor)
    service.add_grpc(lambda server: drift_pb2_grpc.add_DriftServiceServicer_to_server(servicer, server))
    service.add_consumer(topics.PREDICTIONS, consumers.on_prediction(monitor))
    service.add_consumer(topics.LABELS, consumers.on_label(monitor))
    service.add_consumer(topics.EVENTS_DEADLETTER, consumers.on_dead_letter(monitor))
    service.add_consumer(topics.DRIFT_ALERTS, consumers.on_alert(retrainer))

    async def ticker() -> None:
        while True:
            for name, step in (("dead-letter check", monitor.tick), ("retraining policy", retrainer.tick)):
                try:
                    await step()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s failed; retrying next tick", name)
            await asyncio.sleep(drift.tick_s)

    async def close_clients() -> None:
        for client in (registry_refs, stages, feedback):
            with contextlib.suppress(Exception):
                await client.close()

    service.add_task(ticker)
    service.on_stop(close_clients)
    await service.run()


def cli() -> None:
    run_main("drift", main)


if __name__ == "__main__":
    cli()
