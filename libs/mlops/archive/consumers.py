"""Kafka handlers that feed the archive: predictions, and outcomes (rewards and labels)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC

from mlops.archive.store import ArchiveStore, now
from mlops.bus.envelope import Envelope
from mlops.v1 import events_pb2

Handler = Callable[[Envelope], Awaitable[None]]


def on_prediction(store: ArchiveStore) -> Handler:
    async def handle(env: Envelope) -> None:
        p = env.decode(events_pb2.Prediction)
        store.add("predictions", {
            "prediction_id": p.prediction_id, "endpoint": p.endpoint, "variant": p.variant, "model": p.model,
            "version": p.version, "entity_id": p.entity_id, "unit_id": p.unit_id,
            "features": json.dumps(dict(p.features), sort_keys=True), "outputs": list(p.outputs),
            "shadow": p.shadow, "latency_ms": p.latency_ms,
            "time": p.time.ToDatetime(tzinfo=UTC) if p.HasField("time") else now(),
        })

    return handle


def on_reward(store: ArchiveStore) -> Handler:
    async def handle(env: Envelope) -> None:
        r = env.decode(events_pb2.Reward)
        store.add("outcomes", {"prediction_id": r.prediction_id, "kind": "reward", "value": r.reward,
                               "time": r.time.ToDatetime(tzinfo=UTC) if r.HasField("time") else now()})

    return handle


def on_label(store: ArchiveStore) -> Handler:
    async def handle(env: Envelope) -> None:
        label = env.decode(events_pb2.Label)
        store.add("outcomes", {"prediction_id": label.prediction_id, "kind": "label", "value": label.label,
                               "time": label.time.ToDatetime(tzinfo=UTC) if label.HasField("time") else now()})

    return handle
