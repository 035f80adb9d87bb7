"""Kafka adapters: ``predictions`` and ``feedback.raw`` into the join, a batch at a time.

Each topic has a batch consumer (``mlops.bus.batch_consumer``: a lane per partition, a partition's
batches in order, offsets committed after the batch was handled). Its two stages: ``prepare_*`` decodes
and validates a batch (CPU, while other lanes wait on Redis or the broker), ``on_*`` dead-letters the
records that can never be joined and hands the rest to the core (one read and one write in Redis and
one send per batch). A batch that fails is retried whole: every step is idempotent (see ``plan``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mlops.bus.batch_consumer import BatchHandler
from mlops.bus.deadletter import dead_letter
from mlops.bus.envelope import Envelope
from mlops.bus.producer import Producer
from mlops.errors import InvalidArgument, PoisonRecord
from mlops.v1 import events_pb2
from services.feedback import metrics
from services.feedback.core import FeedbackCore
from services.feedback.join import validate_feedback
from services.feedback.plan import FeedbackItem, PredictionItem, source_of

T = TypeVar("T", FeedbackItem, PredictionItem)


@dataclass
class Batch(Generic[T]):
    """A prepared batch: the records to join, and those to dead-letter with their reason and field."""

    items: list[T] = field(default_factory=list)
    bad: list[tuple[Envelope, str, str | None]] = field(default_factory=list)
    shadow: int = 0  # shadow predictions skipped


def prepare_feedback(envelopes: Sequence[Envelope]) -> Batch[FeedbackItem]:
    batch: Batch[FeedbackItem] = Batch()
    for env in envelopes:
        try:
            fb = env.decode(events_pb2.Feedback)
            validate_feedback(fb)
        except (PoisonRecord, InvalidArgument) as exc:
            batch.bad.append((env, exc.message, exc.field))
            continue
        batch.items.append(FeedbackItem(fb.prediction_id, env.value, source_of(env.topic, env.partition, env.offset),
                                        env.partition, env.offset))
    return batch


def prepare_predictions(envelopes: Sequence[Envelope]) -> Batch[PredictionItem]:
    batch: Batch[PredictionItem] = Batch()
    for env in envelopes:
        try:
            prediction = env.decode(events_pb2.Prediction)
        except PoisonRecord as exc:
            batch.bad.append((env, exc.message, exc.field))
            continue
        if not prediction.prediction_id:
            batch.bad.append((env, "prediction has no prediction_id", "prediction_id"))
        elif prediction.shadow:
            # Nobody saw a shadow prediction, so no outcome can be about it: it earns no reward.
            batch.shadow += 1
        else:
            batch.items.append(PredictionItem(prediction.prediction_id, env.value,
                                              source_of(env.topic, env.partition, env.offset)))
    return batch


def _handler(join: Callable[[list[T]], Awaitable[None]], producer: Producer) -> BatchHandler:
    async def handle(batch: Batch[T], final: bool) -> bool:
        for env, reason, where in batch.bad:
            await dead_letter(producer, env, reason, where)
        if batch.shadow:
            metrics.JOIN_RESULTS.labels("shadow_skipped").inc(batch.shadow)
        if batch.items:
            await join(batch.items)
        return True

    return handle


def on_feedback(core: FeedbackCore, producer: Producer) -> BatchHandler:
    return _handler(core.join_feedback, producer)


def on_predictions(core: FeedbackCore, producer: Producer) -> BatchHandler:
    return _handler(core.join_predictions, producer)
