"""Drift service: streaming drift detection on predictions and labels, raising alerts on ``drift.alerts``."""

from mlops.bus import topics
from mlops.service import Service, run_main
from mlops.settings import PlatformSettings, service_settings
from mlops.v1 import drift_pb2_grpc
from services.drift import consumers, grpc_api, http
from services.drift.core import DriftMonitor
from services.drift.settings import DriftSettings
from services.drift.store import DriftStore


async def main() -> None:
    settings = PlatformSettings()
    drift = DriftSettings()
    service = Service(settings, service_settings("drift"))
    assert service.producer is not None
    store = DriftStore(
        service.redis, marker_ttl_s=settings.dedup_ttl_s, window=drift.rebuild_window, max_alerts=drift.max_alerts
    )
    monitor = DriftMonitor(store, service.producer, drift)
    service.add_http(http.router(monitor))
    servicer = grpc_api.Servicer(monitor)
    service.add_grpc(lambda server: drift_pb2_grpc.add_DriftServiceServicer_to_server(servicer, server))
    service.add_consumer(topics.PREDICTIONS, consumers.on_prediction(monitor))
    service.add_consumer(topics.LABELS, consumers.on_label(monitor))
    await service.run()


def cli() -> None:
    run_main("drift", main)


if __name__ == "__main__":
    cli()
