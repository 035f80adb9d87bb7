"""Kafka adapters: ``predictions`` and ``labels`` into the drift monitor."""

from __future__ import annotations

from mlops.bus.consumer import Handler
from mlops.bus.envelope import Envelope
from mlops.v1 import events_pb2
from services.drift.core import DriftMonitor


def on_prediction(monitor: DriftMonitor) -> Handler:
    async def handle(env: Envelope) -> None:
        await monitor.on_prediction(env.decode(events_pb2.Prediction), env.event_id, env.partition)

    return handle


def on_label(monitor: DriftMonitor) -> Handler:
    async def handle(env: Envelope) -> None:
        await monitor.on_label(env.decode(events_pb2.Label), env.event_id, env.partition)

    return handle
