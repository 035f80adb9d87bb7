"""Kafka adapters of the feature service: ``events.validated`` feeds the online store (one consumer
group) and the offline store (another, whose offsets are committed only after its Parquet flush)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mlops.bus.envelope import Envelope
from mlops.v1 import events_pb2
from services.feature.core import FeatureCore


def on_validated_online(core: FeatureCore) -> Callable[[Envelope], Awaitable[None]]:
    async def handle(env: Envelope) -> None:
        await core.apply_online(env.decode(events_pb2.ValidatedEvent), env.event_id)

    return handle


def on_validated_offline(core: FeatureCore) -> Callable[[Envelope], Awaitable[None]]:
    async def handle(env: Envelope) -> None:
        core.add_offline(env.decode(events_pb2.ValidatedEvent), env.event_id)

    return handle
