"""Ingest service: events in over REST, gRPC and ``events.raw``; schemas; dead letters."""

from __future__ import annotations

import gc

from mlops.bus import topics
from mlops.bus.batch_consumer import BatchConsumer
from mlops.service import Service, run_main
from mlops.settings import PlatformSettings, service_settings
from mlops.v1 import ingest_pb2_grpc
from services.ingest import consumers, grpc_api, http
from services.ingest.core import Ingestor
from services.ingest.publish import BatchPublisher
from services.ingest.schema import SchemaStore
from services.ingest.settings import IngestSettings


async def main() -> None:
    settings = PlatformSettings()
    own = IngestSettings()
    service = Service(settings, service_settings("ingest"))
    assert service.producer is not None
    schemas = SchemaStore(settings.home / "ingest" / "schemas")
    # Validated events go out through a batch publisher (one record batch per partition); everything else
    # (dead letters, audit) through the service's producer.
    publisher = BatchPublisher(settings)
    ingestor = Ingestor(schemas, publisher, service.redis, own.dedup_window_s, own.max_batch)
    service.add_http(http.router(ingestor, own.max_body_bytes))
    service.add_grpc(lambda server: ingest_pb2_grpc.add_IngestServiceServicer_to_server(
        grpc_api.IngestServicer(ingestor), server))
    # A batch consumer: one span, one dedup check and one produce per batch, not per record.
    raw = BatchConsumer(settings, topics.EVENTS_RAW, f"ingest.{topics.EVENTS_RAW}",
                        consumers.on_raw(ingestor, service.producer), max_records=own.batch_records)
    service.add_task(raw.run)
    service.on_stop(raw.stop)
    service.on_stop(publisher.stop)  # after the consumer's last batch
    # Everything built so far lives as long as the process: keep it out of the cyclic GC's full passes,
    # which otherwise walk every module object (pauses that show up in read latency tails).
    gc.freeze()
    # A consumer batch keeps thousands of objects alive at once (records, events, messages, futures), which
    # the default thresholds (a young collection every 700 allocations) walk and promote again and again
    # although nearly all of them die together when the batch ends: collect young objects rarely.
    gc.set_threshold(50_000, 20, 20)
    await service.run()


def cli() -> None:
    run_main("ingest", main)


if __name__ == "__main__":
    cli()
