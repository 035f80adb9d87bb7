"""The feature core: applies validated events to the online store and the offline writer; serves
online reads and training sets."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from google.protobuf.json_format import MessageToDict
from prometheus_client import Counter

from mlops.errors import InvalidArgument
from mlops.v1 import events_pb2
from services.feature.definitions import Definitions, max_ttl, operations
from services.feature.offline import DatasetStore, OfflineWriter
from services.feature.online import OnlineStore

APPLIED = Counter("mlops_feature_events_total", "Validated events seen by the feature service.",
                  ["store", "outcome"])


class FeatureCore:
    def __init__(self, defs: Definitions, online: OnlineStore, offline: OfflineWriter, datasets: DatasetStore,
                 max_entities: int) -> None:
        self.defs = defs
        self.online = online
        self.offline = offline
        self.datasets = datasets
        self._max_entities = max_entities

    async def apply_online(self, ev: events_pb2.ValidatedEvent, event_id: str) -> bool:
        fields = MessageToDict(ev.fields) if ev.HasField("fields") else {}
        ops = operations(self.defs, ev.stream, fields)
        applied = await self.online.apply(
            event_id, ev.entity_id, ev.event_time.ToMilliseconds(), ops, max_ttl(self.defs, ev.stream)
        )
        APPLIED.labels("online", "applied" if applied else "duplicate").inc()
        return applied

    def add_offline(self, ev: events_pb2.ValidatedEvent, event_id: str) -> None:
        fields = MessageToDict(ev.fields) if ev.HasField("fields") else {}
        row = {
            "entity_id": ev.entity_id,
            "event_time": ev.event_time.ToDatetime(tzinfo=UTC),
            "event_id": event_id,
            **{k: v for k, v in fields.items() if k not in ("entity_id", "event_time", "event_id")},
        }
        self.offline.add(ev.stream, row)
        APPLIED.labels("offline", "buffered").inc()

    async def read_online(self, entities: list[str], features: list[str]) -> list[dict[str, Any]]:
        if not entities:
            raise InvalidArgument("at least one entity is required", field="entities")
        if len(entities) > self._max_entities:
            raise InvalidArgument(f"at most {self._max_entities} entities per read", field="entities")
        return await self.online.read([str(e) for e in entities], features)
