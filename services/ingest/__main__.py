"""Ingest service: events in over REST, gRPC and ``events.raw``; schemas; dead letters."""

from __future__ import annotations

from mlops.bus import topics
from mlops.bus.batch_consumer import BatchConsumer
from mlops.service import Service, collect_young_objects_rarely, run_main
from mlops.settings import PlatformSettings, peer_address, service_settings
from mlops.v1 import ingest_pb2_grpc
from services.ingest import consumers, grpc_api, http
from services.ingest.core import Ingestor
from services.ingest.schema import SchemaStore
from services.ingest.schema_change import RegistryReaders, SchemaChanges
from services.ingest.settings import IngestSettings


async def main() -> None:
    settings = PlatformSettings()
    own = IngestSettings()
    service = Service(settings, service_settings("ingest"))
    assert service.producer is not None
    schemas = SchemaStore(settings.home / "ingest" / "schemas")
    ingestor = Ingestor(schemas, service.producer, service.redis, own.dedup_window_s, own.max_batch)
    # Asked only when a schema change drops or retypes fields: which serving versions read them.
    readers = RegistryReaders(peer_address("registry"))
    changes = SchemaChanges(schemas, readers, service.producer)
    service.add_http(http.router(ingestor, changes, own.max_body_bytes))
    service.add_grpc(lambda server: ingest_pb2_grpc.add_IngestServiceServicer_to_server(
        grpc_api.IngestServicer(ingestor, changes), server))
    service.on_stop(readers.close)
    # A batch consumer: one span, one dedup check and one produce per batch, not per record.
    raw = BatchConsumer(settings, topics.EVENTS_RAW, f"ingest.{topics.EVENTS_RAW}",
                        consumers.on_raw(ingestor, service.producer), prepare=consumers.prepare_raw(ingestor),
                        max_records=own.batch_records)
    service.add_task(raw.run)
    service.on_stop(raw.stop)
    collect_young_objects_rarely()
    await service.run()


def cli() -> None:
    run_main("ingest", main)


if __name__ == "__main__":
    cli()
