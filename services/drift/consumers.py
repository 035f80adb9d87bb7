"""Kafka adapters: ``predictions``, ``labels`` and ``events.deadletter`` into the drift monitor, and
``drift.alerts`` into the retraining policy."""

from __future__ import annotations

from mlops.bus.consumer import Handler
from mlops.bus.envelope import Envelope
from mlops.v1 import events_pb2
from services.drift.core import DriftMonitor
from services.drift.retraining import Retrainer


def on_prediction(monitor: DriftMonitor) -> Handler:
    async def handle(env: Envelope) -> None:
        await monitor.on_prediction(env.decode(events_pb2.Prediction), env.event_id, env.partition)

    return handle


def on_label(monitor: DriftMonitor) -> Handler:
    async def handle(env: Envelope) -> None:
        await monitor.on_label(env.decode(events_pb2.Label), env.event_id, env.partition)

    return handle


def on_dead_letter(monitor: DriftMonitor) -> Handler:
    async def handle(env: Envelope) -> None:
        await monitor.on_dead_letter(env)

    return handle


def on_alert(retrainer: Retrainer) -> Handler:
    async def handle(env: Envelope) -> None:
        await retrainer.on_alert(env.decode(events_pb2.DriftAlert))

    return handle
