"""Feature service: streaming features into the online (Redis) and offline (Parquet) stores; training sets."""

from __future__ import annotations

from mlops.bus import topics
from mlops.service import Service, run_main
from mlops.settings import PlatformSettings, service_settings
from mlops.v1 import feature_pb2_grpc
from services.feature import consumers, grpc_api, http
from services.feature.core import FeatureCore
from services.feature.definitions import Definitions
from services.feature.offline import DatasetStore, OfflineWriter
from services.feature.online import OnlineStore
from services.feature.settings import FeatureSettings


async def main() -> None:
    settings = PlatformSettings()
    own = FeatureSettings()
    service = Service(settings, service_settings("feature"))
    defs = Definitions.load(own.definitions)
    offline = OfflineWriter(settings.home / "offline")
    core = FeatureCore(
        defs,
        OnlineStore(service.redis, settings.dedup_ttl_s),
        offline,
        DatasetStore(settings.home / "offline", settings.home / "datasets", defs.digest),
        own.max_entities,
    )
    service.add_http(http.router(core))
    service.add_grpc(lambda server: feature_pb2_grpc.add_FeatureServiceServicer_to_server(
        grpc_api.FeatureServicer(core), server))
    service.add_consumer(topics.EVENTS_VALIDATED, consumers.on_validated_online(core), group="feature.online")
    service.add_consumer(topics.EVENTS_VALIDATED, consumers.on_validated_offline(core), group="feature.offline",
                         before_commit=offline.flush)
    await service.run()


def cli() -> None:
    run_main("feature", main)


if __name__ == "__main__":
    cli()
