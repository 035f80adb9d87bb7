"""An aiokafka producer that wraps every record in the platform's envelope (event_id, traceparent)."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager

from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message
from opentelemetry import trace

from mlops import telemetry
from mlops.bus import topics
from mlops.bus.envelope import PROTOBUF, build_headers, new_event_id
from mlops.settings import PlatformSettings

log = logging.getLogger(__name__)


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

    async def send_many(self, topic: str, items: list[tuple[str | None, Message, str]]) -> None:
        """Produce many ``(key, message, event_id)`` at once, then wait for every ack (batched on the wire)."""
        full = topics.name(topic, self._settings)
        with _producer_span(full, f"batch of {len(items)}"):
            trace_headers = telemetry.inject_headers()
            futures = []
            for key, message, event_id in items:
                futures.append(
                    await self._producer.send(
                        full,
                        value=message.SerializeToString(),
                        key=key.encode() if key else None,
                        headers=build_headers(event_id, trace_headers),
                    )
                )
            for fut in futures:
                await fut
        telemetry.RECORDS_PRODUCED.labels(telemetry.service_name(), topic).inc(len(items))
