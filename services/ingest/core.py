"""The ingest core: validate a batch of events, drop repeated event_ids, publish the valid ones to
``events.validated`` keyed by entity, count accepted/rejected/duplicates per stream.

REST, gRPC and the ``events.raw`` consumer all end in :meth:`Ingestor.ingest`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from prometheus_client import Counter
from redis.asyncio import Redis

from mlops.bus import topics
from mlops.bus.envelope import new_event_id
from mlops.errors import InvalidArgument
from mlops.v1 import events_pb2
from services.ingest.schema import EventError, SchemaStore, validate_event

log = logging.getLogger(__name__)

EVENTS = Counter("mlops_ingest_events_total", "Events by stream and outcome.", ["stream", "outcome", "reason"])

# The event_ids of a batch travel as one argument, each "<byte length>:<id>" (ids may hold any character),
# and the scripts make the keys from a prefix: one argument per batch instead of one per event (the
# client's cost per argument was a tenth of ingest's CPU per event).
_NEXT_ID = """
local function next_id(ids, pos)
  local c = string.find(ids, ':', pos, true)
  local n = tonumber(string.sub(ids, pos, c - 1))
  return string.sub(ids, c + 1, c + n), c + n + 1
end
"""

# Which of the event_ids were seen within the window (one call for a whole batch), as one string of
# '0' and '1' (one reply to parse instead of one per event). ARGV: key prefix, ids. One EXISTS counts a
# thousand keys at once; only a thousand with a repeat among them is asked about key by key.
_SEEN = _NEXT_ID + """
local prefix, ids, pos, keys, out = ARGV[1], ARGV[2], 1, {}, {}
while pos <= #ids do
  local id
  id, pos = next_id(ids, pos)
  keys[#keys + 1] = prefix .. id
end
for i = 1, #keys, 1000 do
  local j = math.min(i + 999, #keys)
  if redis.call('EXISTS', unpack(keys, i, j)) == 0 then
    out[#out + 1] = string.rep('0', j - i + 1)
  else
    for k = i, j do out[#out + 1] = redis.call('EXISTS', keys[k]) end
  end
end
return table.concat(out)
"""

# Marks the event_ids seen and counts them accepted in one step, so a count never runs ahead of the marks.
# KEYS: the stream's stats hash. ARGV: window seconds, key prefix, ids.
_MARK_AND_COUNT = _NEXT_ID + """
local window, prefix, ids, pos = tonumber(ARGV[1]), ARGV[2], ARGV[3], 1
local accepted, total = 0, 0
while pos <= #ids do
  local id
  id, pos = next_id(ids, pos)
  total = total + 1
  if redis.call('SET', prefix .. id, '1', 'NX', 'EX', window) then accepted = accepted + 1 end
end
if accepted > 0 then redis.call('HINCRBY', KEYS[1], 'accepted', accepted) end
local dupes = total - accepted
if dupes > 0 then redis.call('HINCRBY', KEYS[1], 'duplicates', dupes) end
return accepted
"""


# The Kafka path's dedup in one step before publishing: each event_id is claimed (marked with the origin
# of its record, "<partition>:<offset>:<timestamp>" of events.raw) unless another record claimed it
# within the window. A record whose own claim is found (its batch was retried, or redelivered after a
# crash between claim and publish) is published again, so nothing is lost; events.validated's consumers
# drop the repeat. KEYS: the stream's stats hash. ARGV: window seconds, key prefix, ids, origins (both
# sized). Returns per event '1' claimed now, '2' claimed before by this record, '0' a duplicate.
_CLAIM = _NEXT_ID + """
local window, prefix, ids, origins = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local pos, opos, out, claimed, dupes = 1, 1, {}, 0, 0
while pos <= #ids do
  local id, origin
  id, pos = next_id(ids, pos)
  origin, opos = next_id(origins, opos)
  local key = prefix .. id
  if redis.call('SET', key, origin, 'NX', 'EX', window) then
    claimed = claimed + 1
    out[#out + 1] = '1'
  elseif redis.call('GET', key) == origin then
    out[#out + 1] = '2'
  else
    dupes = dupes + 1
    out[#out + 1] = '0'
  end
end
if claimed > 0 then redis.call('HINCRBY', KEYS[1], 'accepted', claimed) end
if dupes > 0 then redis.call('HINCRBY', KEYS[1], 'duplicates', dupes) end
return table.concat(out)
"""


def _sized(ids: list[str]) -> str:
    """``ids`` as the scripts read them: each as its UTF-8 length, ':', itself."""
    return "".join(f"{len(i) if i.isascii() else len(i.encode())}:{i}" for i in ids)


class Publisher(Protocol):
    """What publishes validated events: ``mlops.bus.producer.Producer`` (a stand-in in unit tests)."""

    async def send_many(self, topic: str, items: list[tuple[str | None, Message, str]]) -> None: ...


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


@dataclass
class Prepared:
    """A batch validated and encoded, not yet published (:meth:`Ingestor.prepare`)."""

    stream: str
    dedup_window_s: int
    #: per valid event: (entity_id, the message, event_id), as the producer takes them (the ids kept as
    #: Python strings: every read of a message's field makes a new one)
    valid: list[tuple[str, events_pb2.ValidatedEvent, str]]
    rejected: list[Rejection]
    #: per valid event, where its record came from (Kafka path: one claim per event, see ``_CLAIM``)
    origins: list[str] | None = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _set_time(ts: timestamp_pb2.Timestamp, dt: datetime) -> None:
    """``ts.FromDatetime(dt)`` without its calendar round trip (a hot path: one call per event)."""
    delta = dt - _EPOCH
    ts.seconds = delta.days * 86400 + delta.seconds
    ts.nanos = delta.microseconds * 1000


def _set_fields(struct: struct_pb2.Struct, fields: dict[str, Any]) -> None:
    """``struct.update(fields)`` for the scalar values a schema allows, without the generic dispatch."""
    entries = struct.fields
    for name, value in fields.items():
        if isinstance(value, bool):
            entries[name].bool_value = value
        elif isinstance(value, int | float):
            entries[name].number_value = value
        elif isinstance(value, str):
            entries[name].string_value = value
        else:
            struct.update({name: value})


class Ingestor:
    def __init__(self, schemas: SchemaStore, producer: Publisher, redis: Redis, dedup_window_s: int,
                 max_batch: int) -> None:
        """``dedup_window_s``: how long an event_id is remembered, unless its stream's schema sets its own."""
        self.schemas = schemas
        self._producer = producer
        self._redis = redis
        self._window = dedup_window_s
        self._max_batch = max_batch
        self._mark = redis.register_script(_MARK_AND_COUNT)
        self._seen = redis.register_script(_SEEN)
        self._claim = redis.register_script(_CLAIM)

    def _seen_prefix(self, stream: str) -> str:
        return f"mlops:ingest:seen:{stream}:"  # then the event_id

    def _stats_key(self, stream: str) -> str:
        return f"mlops:ingest:stats:{stream}"

    async def ingest(self, stream: str, events: list[Any], default_ids: list[str] | None = None) -> IngestResult:
        """Validate and publish ``events``; ``default_ids`` give ids to events that carry none (Kafka offsets)."""
        return await self.publish(self.prepare(stream, events, default_ids))

    def prepare(self, stream: str, events: list[Any], default_ids: list[str] | None = None,
                origins: list[str] | None = None) -> Prepared:
        """Validate and encode ``events`` (CPU only: no I/O, no effects; :meth:`publish` does the rest).
        ``origins``: per event, the Kafka record it came from, for the one-step claim of ``_CLAIM``."""
        if len(events) > self._max_batch:
            raise InvalidArgument(f"at most {self._max_batch} events per request, got {len(events)}", field="events")
        schema = self.schemas.get(stream)
        rejected: list[Rejection] = []
        valid: list[tuple[str, events_pb2.ValidatedEvent, str]] = []
        kept: list[str] | None = [] if origins is not None else None
        now = datetime.now(UTC)
        ingested_at = timestamp_pb2.Timestamp()
        _set_time(ingested_at, now)
        for i, raw in enumerate(events):
            try:
                ev = validate_event(schema, raw, now)
                msg = events_pb2.ValidatedEvent()
                msg.stream = stream
                event_id = ev.event_id or (default_ids[i] if default_ids else new_event_id())
                msg.event_id = event_id
                msg.entity_id = ev.entity_id
                msg.schema_version = schema.version
                _set_time(msg.event_time, ev.event_time)
                msg.ingested_at.CopyFrom(ingested_at)
                _set_fields(msg.fields, ev.fields)
            except EventError as exc:
                rejected.append(Rejection(i, exc.message, exc.field, exc.reason))
                continue
            except (OverflowError, ValueError) as exc:
                # A number no field holds (an int past 64 bits, a float past 1e308, a time past year 9999):
                # this event is rejected, as a wrong type would be, and the request is not a 500.
                rejected.append(Rejection(i, f"a value is out of range: {exc}", None, "out_of_range"))
                continue
            valid.append((ev.entity_id, msg, event_id))
            if kept is not None and origins is not None:
                kept.append(origins[i])
        return Prepared(stream, schema.dedup_window_s or self._window, valid, rejected, kept)

    async def publish(self, prepared: Prepared) -> IngestResult:
        """Drop the event_ids seen within the window, publish the rest, mark them seen, count."""
        stream, valid = prepared.stream, prepared.valid
        result = IngestResult(rejected=prepared.rejected)
        if prepared.origins is not None:
            return await self._claim_and_publish(prepared, prepared.origins, result)
        fresh = await self._drop_seen(stream, valid)
        result.duplicates = len(valid) - len(fresh)
        if result.duplicates:
            await self._redis.hincrby(self._stats_key(stream), "duplicates", result.duplicates)
        if fresh:
            # Publish first, mark after: a crash in between republishes the same event_id, which the
            # consumers of events.validated drop; marking first could lose the event.
            await self._producer.send_many(topics.EVENTS_VALIDATED, fresh)
            ids = _sized([event_id for _, _, event_id in fresh])
            result.accepted = int(await self._mark(keys=[self._stats_key(stream)],
                                                   args=[prepared.dedup_window_s, self._seen_prefix(stream), ids]))
            result.duplicates += len(fresh) - result.accepted
        await self._count(stream, result)
        return result

    async def _claim_and_publish(self, prepared: Prepared, origins: list[str], result: IngestResult
                                 ) -> IngestResult:
        """The Kafka path: claim, then publish what this record may publish (one Redis round trip)."""
        stream, valid = prepared.stream, prepared.valid
        if valid:
            flags = await self._claim(keys=[self._stats_key(stream)], args=[
                prepared.dedup_window_s, self._seen_prefix(stream), _sized([item[2] for item in valid]),
                _sized(origins)])
            fresh = [item for item, flag in zip(valid, flags, strict=True) if flag != 48]  # not b"0"
            result.accepted = len(fresh)
            result.duplicates = len(valid) - len(fresh)
            if fresh:
                await self._producer.send_many(topics.EVENTS_VALIDATED, fresh)
        await self._count(stream, result)
        return result

    async def _drop_seen(self, stream: str, valid: list[tuple[str, events_pb2.ValidatedEvent, str]]
                         ) -> list[tuple[str, events_pb2.ValidatedEvent, str]]:
        if not valid:
            return []
        ids = _sized([item[2] for item in valid])
        seen = [c == 49 for c in await self._seen(args=[self._seen_prefix(stream), ids])]
        fresh: list[tuple[str, events_pb2.ValidatedEvent, str]] = []
        kept: set[str] = set()
        for item, was_seen in zip(valid, seen, strict=True):
            if was_seen or item[2] in kept:
                continue
            kept.add(item[2])
            fresh.append(item)
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
