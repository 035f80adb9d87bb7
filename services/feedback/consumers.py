"""Kafka adapters: ``predictions`` and ``feedback.raw`` into the join."""

from __future__ import annotations

from mlops.bus.consumer import Handler
from mlops.bus.envelope import Envelope
from mlops.v1 import events_pb2
from services.feedback.core import FeedbackCore


def on_prediction(core: FeedbackCore) -> Handler:
    async def handle(env: Envelope) -> None:
        await core.on_prediction(env.decode(events_pb2.Prediction), env.value)

    return handle


def on_feedback(core: FeedbackCore) -> Handler:
    async def handle(env: Envelope) -> None:
        await core.on_feedback(env.decode(events_pb2.Feedback), env.value, env.partition, env.offset)

    return handle
