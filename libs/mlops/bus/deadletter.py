"""Dead letters: the original bytes of a record that cannot be processed, with the reason in headers."""

from __future__ import annotations

import logging

from mlops import telemetry
from mlops.bus import topics
from mlops.bus.envelope import Envelope
from mlops.bus.producer import Producer

log = logging.getLogger(__name__)

REASON = "mlops-dlq-reason"
FIELD = "mlops-dlq-field"
SOURCE_TOPIC = "mlops-dlq-source-topic"
SOURCE_PARTITION = "mlops-dlq-source-partition"
SOURCE_OFFSET = "mlops-dlq-source-offset"
SERVICE = "mlops-dlq-service"


async def dead_letter(producer: Producer, record: Envelope, reason: str, field: str | None = None) -> None:
    """Send ``record`` unchanged to ``events.deadletter``; the reason and origin go in headers."""
    headers = {
        REASON: reason[:1000],
        SOURCE_TOPIC: record.topic,
        SOURCE_PARTITION: str(record.partition),
        SOURCE_OFFSET: str(record.offset),
        SERVICE: telemetry.service_name(),
    }
    if field:
        headers[FIELD] = field
    await producer.send(
        topics.EVENTS_DEADLETTER,
        record.value,
        key=record.key,
        event_id=record.event_id,
        content_type=record.content_type,
        headers=headers,
    )
    telemetry.DEAD_LETTERS.labels(telemetry.service_name(), reason.split(":")[0][:60]).inc()
    log.warning("dead-lettered %s@%s/%s: %s", record.topic, record.partition, record.offset, reason)
