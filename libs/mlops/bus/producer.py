"""An aiokafka producer that wraps every record in the platform's envelope (event_id, traceparent)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from google.protobuf.message import Message
from opentelemetry import trace

from mlops import telemetry
from mlops.bus import topics
from mlops.bus.envelope import PROTOBUF, build_headers, new_event_id
from mlops.settings import PlatformSettings

log = logging.getLogger(__name__)

#: keys whose partition a producer remembers (entities repeat; the cache is emptied when it is full)
MAX_CACHED_KEYS = 100_000


def _producer_span(topic: str, message_id: str) -> AbstractContextManager[trace.Span]:
    """A PRODUCER span around a send, so the consumer's span is its child across the Kafka hop."""
    return telemetry.tracer().start_as_current_span(
        f"send {topic}",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "messaging.message.id": message_id,
        },
    )


class Producer:
    """Sends protobuf messages (or raw bytes) and waits for the broker's acknowledgement."""

    def __init__(self, settings: PlatformSettings, client_id: str = "mlops") -> None:
        self._settings = settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=client_id,
            acks="all" if settings.kafka_acks == "all" else int(settings.kafka_acks),
            enable_idempotence=settings.kafka_idempotence,
            linger_ms=settings.kafka_linger_ms,
            max_request_size=16 * 1024 * 1024,
        )
        self._partitioner = DefaultPartitioner()
        self._partition_of: dict[tuple[str, bytes], int] = {}
        self._partitions: dict[str, list[int]] = {}
        self.started = False

    async def start(self) -> None:
        await self._producer.start()
        self.started = True

    async def stop(self) -> None:
        if self.started:
            self.started = False
            await self._producer.stop()

    async def send(
        self,
        topic: str,
        message: Message | bytes,
        *,
        key: str | bytes | None = None,
        event_id: str | None = None,
        content_type: str = PROTOBUF,
        headers: dict[str, str] | None = None,
    ) -> str:
        """Produce one record to the logical ``topic`` and wait for acks; returns its ``event_id``."""
        event_id = event_id or new_event_id()
        value = message if isinstance(message, bytes) else message.SerializeToString()
        full = topics.name(topic, self._settings)
        with _producer_span(full, event_id):
            record_headers = build_headers(event_id, telemetry.inject_headers(), content_type, **(headers or {}))
            await self._producer.send_and_wait(
                full,
                value=value,
                key=key.encode() if isinstance(key, str) else key,
                headers=record_headers,
            )
        telemetry.RECORDS_PRODUCED.labels(telemetry.service_name(), topic).inc()
        return event_id

    async def _partition_list(self, topic: str) -> list[int]:
        # as the producer's own partitioning lists them (a metadata refresh may add partitions)
        partitions = list(await self._producer.partitions_for(topic))
        if partitions != self._partitions.get(topic):
            self._partitions[topic] = partitions
            self._partition_of.clear()
        return partitions

    async def send_many(self, topic: str, items: list[tuple[str | None, Message, str]],
                        trace_headers: Sequence[list[tuple[str, bytes]]] | None = None) -> None:
        """Produce many ``(key, message, event_id)`` at once, then wait for every ack. ``trace_headers``,
        when given, are each item's own (records made by different requests, sent together, each in the
        trace of its request); otherwise every record carries the current trace.

        One call for many records, not one call per request: aiokafka queues one batch per partition and a
        new batch waits until the partition's last one drained, so hundreds of concurrent calls wait on
        each other's round trips past the producer's timeout (inference's log failed so, on and on).

        Keyed records go into one record batch per partition, filled in place (aiokafka's ``create_batch``
        / ``send_batch``), in the partition the default partitioner picks (one key's records stay in
        order on one partition), each key's partition computed once. A ``send`` per record cost ingest
        about a third of its CPU per event (a future, a metadata wait, a pure-Python murmur2 of the key,
        a batch lookup, each time); here a record costs one append."""
        full = topics.name(topic, self._settings)
        with _producer_span(full, f"batch of {len(items)}"):
            current = telemetry.inject_headers()
            partitions = await self._partition_list(full)
            cache = self._partition_of
            if len(cache) > MAX_CACHED_KEYS:
                cache.clear()
            builders: dict[int, Any] = {}  # aiokafka's BatchBuilder per partition
            acks: list[asyncio.Future[Any]] = []
            for i, (key, message, event_id) in enumerate(items):
                key_bytes = key.encode() if key else None
                value = message.SerializeToString()
                headers = build_headers(event_id, current if trace_headers is None else trace_headers[i])
                if key_bytes is None:  # unkeyed: the producer picks the partition, as it would
                    acks.append(await self._producer.send(full, value=value, headers=headers))
                    continue
                partition = cache.get((full, key_bytes))
                if partition is None:
                    partition = cache[(full, key_bytes)] = self._partitioner(key_bytes, partitions, partitions)
                builder = builders.get(partition)
                if builder is None:
                    builder = builders[partition] = self._producer.create_batch()
                if builder.append(key=key_bytes, value=value, timestamp=None, headers=headers) is None:
                    # full: hand it over (order within the partition is kept) and start the next one
                    acks.append(await self._producer.send_batch(builder, full, partition=partition))
                    builder = builders[partition] = self._producer.create_batch()
                    if builder.append(key=key_bytes, value=value, timestamp=None, headers=headers) is None:
                        # larger than a whole batch: on its own, as the producer sends large records
                        del builders[partition]
                        acks.append(await self._producer.send(full, value=value, key=key_bytes,
                                                              partition=partition, headers=headers))
            for partition, builder in builders.items():
                acks.append(await self._producer.send_batch(builder, full, partition=partition))
            await asyncio.gather(*acks)
        telemetry.RECORDS_PRODUCED.labels(telemetry.service_name(), topic).inc(len(items))
