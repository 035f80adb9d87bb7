"""Ingest service: events in over REST, gRPC and ``events.raw``; schemas; dead letters."""

from __future__ import annotations

from mlops.bus import topics
from mlops.service import Service, run_main
from mlops.settings import PlatformSettings, service_settings
from mlops.v1 import ingest_pb2_grpc
from services.ingest import consumers, grpc_api, http
from services.ingest.core import Ingestor
from services.ingest.schema import SchemaStore
from services.ingest.settings import IngestSettings


async def main() -> None:
    settings = PlatformSettings()
    own = IngestSettings()
    service = Service(settings, service_settings("ingest"))
    assert service.producer is not None
    schemas = SchemaStore(settings.home / "ingest" / "schemas")
    ingestor = Ingestor(schemas, service.producer, service.redis, own.dedup_window_s, own.max_batch)
    service.add_http(http.router(ingestor, own.max_body_bytes))
    service.add_grpc(lambda server: ingest_pb2_grpc.add_IngestServiceServicer_to_server(
        grpc_api.IngestServicer(ingestor), server))
    service.add_consumer(topics.EVENTS_RAW, consumers.on_raw(ingestor))
    await service.run()


def cli() -> None:
    run_main("ingest", main)


if __name__ == "__main__":
    cli()
