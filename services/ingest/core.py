"""The ingest core: validate a batch of events, drop repeated event_ids, publish the valid ones to
``events.validated`` keyed by entity, count accepted/rejected/duplicates per stream.

REST, gRPC and the ``events.raw`` consumer all end in :meth:`Ingestor.ingest`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from prometheus_client import Counter
from redis.asyncio import Redis

from mlops.bus import topics
from mlops.bus.envelope import new_event_id
from mlops.bus.producer import Producer
from mlops.errors import InvalidArgument
from mlops.v1 import events_pb2
from services.ingest.schema import EventError, SchemaStore, validate_event

log = logging.getLogger(__name__)

EVENTS = Counter("mlops_ingest_events_total", "Events by stream and outcome.", ["stream", "outcome", "reason"])

# Marks the event_id seen and counts it accepted in one step, so a count never runs ahead of the marks.
_MARK_AND_COUNT = """
local accepted = 0
for i, key in ipairs(KEYS) do
  if i > 1 then
    if redis.call('SET', key, '1', 'NX', 'EX', tonumber(ARGV[1])) then accepted = accepted + 1 end
  end
end
if accepted > 0 then redis.call('HINCRBY', KEYS[1], 'accepted', accepted) end
local dupes = (#KEYS - 1) - accepted
if dupes > 0 then redis.call('HINCRBY', KEYS[1], 'duplicates', dupes) end
return accepted
"""


@dataclass
class Rejection:
    index: int
    error: str
    field: str | None = None
    reason: str = "invalid"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "error": self.error}
        if self.field:
            out["field"] = self.field
        return out


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)


def _timestamp(dt: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt.astimezone(UTC))
    return ts


class Ingestor:
    def __init__(self, schemas: SchemaStore, producer: Producer, redis: Redis, dedup_window_s: int,
                 max_batch: int) -> None:
        self.schemas = schemas
        self._producer = producer
        self._redis = redis
        self._window = dedup_window_s
        self._max_batch = max_batch
        self._mark = redis.register_script(_MARK_AND_COUNT)

    def _seen_key(self, stream: str, event_id: str) -> str:
        return f"mlops:ingest:seen:{stream}:{event_id}"

    def _stats_key(self, stream: str) -> str:
        return f"mlops:ingest:stats:{stream}"

    async def ingest(self, stream: str, events: list[Any], default_ids: list[str] | None = None) -> IngestResult:
        """Validate and publish ``events``; ``default_ids`` give ids to events that carry none (Kafka offsets)."""
        if len(events) > self._max_batch:
            raise InvalidArgument(f"at most {self._max_batch} events per request, got {len(events)}", field="events")
        schema = self.schemas.get(stream)
        result = IngestResult()
        valid: list[tuple[int, events_pb2.ValidatedEvent]] = []
        now = datetime.now(UTC)
        for i, raw in enumerate(events):
            try:
                ev = validate_event(schema, raw, now)
            except EventError as exc:
                result.rejected.append(Rejection(i, exc.message, exc.field, exc.reason))
                continue
            fields = struct_pb2.Struct()
            fields.update(ev.fields)
            event_id = ev.event_id or (default_ids[i] if default_ids else new_event_id())
            valid.append((i, events_pb2.ValidatedEvent(
                stream=stream, event_id=event_id, entity_id=ev.entity_id, event_time=_timestamp(ev.event_time),
                fields=fields, ingested_at=_timestamp(now), schema_version=schema.version,
            )))
        fresh = await self._drop_seen(stream, valid)
        result.duplicates = len(valid) - len(fresh)
        if result.duplicates:
            await self._redis.hincrby(self._stats_key(stream), "duplicates", result.duplicates)
        if fresh:
            # Publish first, mark after: a crash in between republishes the same event_id, which the
            # consumers of events.validated drop; marking first could lose the event.
            await self._producer.send_many(
                topics.EVENTS_VALIDATED, [(ev.entity_id, ev, ev.event_id) for ev in fresh]
            )
            keys = [self._stats_key(stream)] + [self._seen_key(stream, ev.event_id) for ev in fresh]
            result.accepted = int(await self._mark(keys=keys, args=[self._window]))
            result.duplicates += len(fresh) - result.accepted
        await self._count(stream, result)
        return result

    async def _drop_seen(
        self, stream: str, valid: list[tuple[int, events_pb2.ValidatedEvent]]
    ) -> list[events_pb2.ValidatedEvent]:
        if not valid:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for _, ev in valid:
            pipe.exists(self._seen_key(stream, ev.event_id))
        seen = await pipe.execute()
        fresh: list[events_pb2.ValidatedEvent] = []
        ids: set[str] = set()
        for (_, ev), was_seen in zip(valid, seen, strict=True):
            if was_seen or ev.event_id in ids:
                continue
            ids.add(ev.event_id)
            fresh.append(ev)
        return fresh

    async def _count(self, stream: str, result: IngestResult) -> None:
        if result.accepted:
            EVENTS.labels(stream, "accepted", "").inc(result.accepted)
        if result.duplicates:
            EVENTS.labels(stream, "duplicate", "").inc(result.duplicates)
        if result.rejected:
            pipe = self._redis.pipeline(transaction=False)
            for r in result.rejected:
                EVENTS.labels(stream, "rejected", r.reason).inc()
                pipe.hincrby(self._stats_key(stream), f"rejected:{r.reason}", 1)
            await pipe.execute()

    async def stats(self, stream: str) -> dict[str, Any]:
        self.schemas.get(stream)
        raw = await self._redis.hgetall(self._stats_key(stream))
        counts = {k.decode(): int(v) for k, v in raw.items()}
        rejected = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("rejected:")}
        return {
            "stream": stream,
            "accepted": counts.get("accepted", 0),
            "duplicates": counts.get("duplicates", 0),
            "rejected": rejected,
        }
