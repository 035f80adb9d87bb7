"""Feature service: streaming features into the online (Redis) and offline (Parquet) stores; training sets."""

from __future__ import annotations

from mlops.bus import topics
from mlops.bus.batch_consumer import BatchConsumer
from mlops.service import Service, collect_young_objects_rarely, run_main
from mlops.settings import PlatformSettings, service_settings
from mlops.v1 import feature_pb2_grpc
from services.feature import consumers, grpc_api, http
from services.feature.core import FeatureCore
from services.feature.datasets import DatasetStore
from services.feature.definitions import Definitions
from services.feature.offline import OfflineWriter
from services.feature.online import OnlineStore
from services.feature.quality import Quality
from services.feature.settings import FeatureSettings


async def main() -> None:
    settings = PlatformSettings()
    own = FeatureSettings()
    service = Service(settings, service_settings("feature"))
    assert service.producer is not None
    defs = Definitions.load(own.definitions)
    core = FeatureCore(
        defs,
        OnlineStore(service.redis, defs, settings.dedup_ttl_s),
        OfflineWriter(settings.home / "offline"),
        DatasetStore(settings.home / "offline", settings.home / "datasets", defs),
        Quality(service.redis, defs),
        own.max_entities,
    )
    service.add_http(http.router(core))
    service.add_grpc(lambda server: feature_pb2_grpc.add_FeatureServiceServicer_to_server(
        grpc_api.FeatureServicer(core), server))
    # One batch consumer feeds both stores (one span and one Redis script per batch, not per event),
    # stopped before the producer closes.
    consumer = BatchConsumer(settings, topics.EVENTS_VALIDATED, "feature",
                             consumers.on_validated(core, service.producer, own.offline_flush_s,
                                                    own.offline_flush_rows, own.offline_max_pending),
                             prepare=consumers.prepare_validated(core), max_records=own.batch_records)
    service.add_task(consumer.run)
    service.on_stop(consumer.stop)
    collect_young_objects_rarely()
    await service.run()


def cli() -> None:
    run_main("feature", main)


if __name__ == "__main__":
    cli()
