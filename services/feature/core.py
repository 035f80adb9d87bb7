"""The feature core: applies batches of validated events to the online store and the offline writer;
serves online reads and training sets. Knows nothing of HTTP, gRPC or Kafka."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict
from prometheus_client import Counter

from mlops.errors import InvalidArgument
from mlops.v1 import events_pb2
from services.feature.datasets import DatasetSpec, DatasetStore
from services.feature.definitions import Definitions
from services.feature.offline import OfflineWriter
from services.feature.online import OnlineEvent, OnlineStore
from services.feature.quality import Quality

APPLIED = Counter("mlops_feature_events_total", "Validated events seen by the feature service.",
                  ["store", "outcome"])


def struct_to_dict(fields: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain Python values (what ``MessageToDict`` gives, about three times faster)."""
    out: dict[str, Any] = {}
    entries = fields.fields
    for name in entries:
        value = entries[name]
        kind = value.WhichOneof("kind")
        if kind == "number_value":
            out[name] = value.number_value
        elif kind == "string_value":
            out[name] = value.string_value
        elif kind == "bool_value":
            out[name] = value.bool_value
        elif kind == "null_value" or kind is None:
            continue
        else:
            out[name] = MessageToDict(value)
    return out


@dataclass(slots=True)
class PreparedEvents:
    """A batch of validated events ready to apply (:meth:`FeatureCore.prepare`)."""

    online_calls: list[list[str | int]]
    offline_rows: list[tuple[str, str, int, str, dict[str, Any]]]
    quality: dict[tuple[str, str, str], int]


def decode(value: bytes) -> events_pb2.ValidatedEvent:
    ev = events_pb2.ValidatedEvent()
    ev.ParseFromString(value)
    return ev


class FeatureCore:
    def __init__(self, defs: Definitions, online: OnlineStore, offline: OfflineWriter, datasets: DatasetStore,
                 quality: Quality, max_entities: int) -> None:
        self.defs = defs
        self.online = online
        self.offline = offline
        self.datasets = datasets
        self.quality = quality
        self._max_entities = max_entities

    async def apply(self, events: Sequence[tuple[str, events_pb2.ValidatedEvent]]) -> None:
        """Apply ``(event_id, event)`` pairs to the online store (each at most once) and buffer them as
        offline rows (written by :meth:`OfflineWriter.flush`; repeats are dropped when read)."""
        await self.apply_prepared(self.prepare(events))

    def prepare(self, events: Sequence[tuple[str, events_pb2.ValidatedEvent]]) -> PreparedEvents:
        """The CPU part of :meth:`apply` (decode, encode the Redis calls, count quality), with no effects:
        done while other batches are in Redis."""
        batch = []
        rows = []
        for event_id, ev in events:
            fields = struct_to_dict(ev.fields)
            entity, stream, ts = ev.entity_id, ev.stream, ev.event_time  # each read of a message field allocates
            seconds, nanos = ts.seconds, ts.nanos
            batch.append(OnlineEvent(event_id, entity, stream, seconds * 1000 + nanos // 1_000_000, fields))
            rows.append((stream, entity, seconds * 1_000_000 + nanos // 1000, event_id, fields))
        return PreparedEvents(self.online.encode(batch), rows, self.quality.count(batch))

    async def apply_prepared(self, prepared: PreparedEvents) -> None:
        self.offline.extend(prepared.offline_rows)
        result = await self.online.apply_encoded(prepared.online_calls)
        # Quality counts every event delivered: rates, which a rare redelivery barely moves.
        await self.quality.record(prepared.quality)
        APPLIED.labels("online", "applied").inc(result.applied)
        APPLIED.labels("offline", "buffered").inc(len(prepared.offline_rows))
        if result.duplicates:
            APPLIED.labels("online", "duplicate").inc(result.duplicates)
        if result.late:
            APPLIED.labels("online", "late").inc(result.late)

    def _check_read(self, entities: Sequence[str]) -> None:
        if not entities:
            raise InvalidArgument("at least one entity is required", field="entities")
        if len(entities) > self._max_entities:
            raise InvalidArgument(f"at most {self._max_entities} entities per read", field="entities")

    async def read_online(self, entities: Sequence[str], features: Sequence[str],
                          as_of: datetime | None = None) -> list[dict[str, Any]]:
        self._check_read(entities)
        return await self.online.read([str(e) for e in entities], list(features), as_of)

    async def read_online_items(self, entities: Sequence[str]) -> list[Any]:
        """:meth:`OnlineStore.read_items` at the time of the read, for adapters that build their own rows."""
        self._check_read(entities)
        return await self.online.read_items(entities)

    def build_dataset(self, spec: DatasetSpec) -> dict[str, Any]:
        return self.datasets.build(spec)
