"""The feedback service's logic: accept outcomes, join them to predictions exactly once, keep online
quality, and dead-letter feedback whose prediction never came. Transports call into :class:`FeedbackCore`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from mlops.bus import topics
from mlops.bus.deadletter import dead_letter
from mlops.bus.envelope import EVENT_ID, Envelope
from mlops.bus.producer import Producer
from mlops.errors import InvalidArgument, NotFound, PoisonRecord
from mlops.v1 import events_pb2
from services.feedback import metrics
from services.feedback.join import (
    Quality,
    build_label,
    build_reward,
    feedback_event_id,
    label_event_id,
    outcome,
    reward_event_id,
    validate_feedback,
)
from services.feedback.settings import FeedbackSettings
from services.feedback.store import JoinStep, JoinStore

log = logging.getLogger(__name__)

EXPIRED_REASON = "unmatched feedback after TTL"


class ClaimBusy(Exception):
    """Another consumer holds a fresh claim on this join; the record is retried (with backoff) later."""


class FeedbackCore:
    """One instance per process; ``producer`` must be started before :meth:`submit` or a handler runs."""

    def __init__(
        self,
        store: JoinStore,
        producer: Producer,
        settings: FeedbackSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._producer = producer
        self._settings = settings
        self._clock = clock
        self._stopping = asyncio.Event()

    # -- API ---------------------------------------------------------------------------------------------
    async def submit(self, items: list[events_pb2.Feedback], *, batch_field: str | None = None) -> int:
        """Validate every item, stamp its time, produce all to ``feedback.raw``; returns how many.

        ``batch_field`` locates the items in errors: None for a single object, ``""`` for a top-level
        list (``0.label``), a name for a list field (``items.0.label``).
        """
        where = batch_field or "items"
        if not items:
            raise InvalidArgument("no feedback items", field=where)
        if len(items) > self._settings.max_batch:
            raise InvalidArgument(f"more than {self._settings.max_batch} feedback items", field=where)
        for i, fb in enumerate(items):
            prefix = "" if batch_field is None else f"{batch_field}.{i}." if batch_field else f"{i}."
            validate_feedback(fb, prefix)
        now = self._clock()
        for fb in items:
            if not fb.HasField("time"):
                fb.time.FromNanoseconds(int(now * 1e9))
        await self._producer.send_many(
            topics.FEEDBACK_RAW,
            [(fb.prediction_id, fb, feedback_event_id(fb.prediction_id)) for fb in items],
        )
        return len(items)

    async def quality(self, model: str, version: str) -> Quality:
        q = await self.store.quality(model, version)
        if q is None:
            raise NotFound(f"no feedback joined for model {model!r} version {version!r}", field="version")
        return q

    # -- consumers ---------------------------------------------------------------------------------------
    async def on_prediction(self, prediction: events_pb2.Prediction, raw: bytes) -> None:
        if not prediction.prediction_id:
            raise PoisonRecord("prediction has no prediction_id", field="prediction_id")
        if prediction.shadow:
            # Nobody saw a shadow prediction, so no outcome can be about it: it earns no reward.
            metrics.JOIN_RESULTS.labels("shadow_skipped").inc()
            return
        step = await self.store.on_prediction(prediction.prediction_id, raw, self._clock())
        await self._after(prediction.prediction_id, step)

    async def on_feedback(self, fb: events_pb2.Feedback, raw: bytes, partition: int, offset: int) -> None:
        try:
            validate_feedback(fb)
        except InvalidArgument as exc:
            raise PoisonRecord(exc.message, field=exc.field) from exc
        step = await self.store.on_feedback(fb.prediction_id, raw, partition, offset, self._clock())
        await self._after(fb.prediction_id, step)

    async def _after(self, prediction_id: str, step: JoinStep) -> None:
        if step.result == "busy":
            raise ClaimBusy(f"join of {prediction_id} is being emitted elsewhere")
        if step.result != "stored":
            metrics.JOIN_RESULTS.labels(step.result).inc()
        if step.result == "joined":
            assert step.prediction is not None and step.feedback is not None
            await self._emit(step.prediction, step.feedback)

    async def _emit(self, raw_prediction: bytes, raw_feedback: bytes) -> None:
        prediction = events_pb2.Prediction.FromString(raw_prediction)
        fb = events_pb2.Feedback.FromString(raw_feedback)
        result = outcome(prediction, fb)
        pid = prediction.prediction_id
        await self._producer.send(
            topics.REWARDS, build_reward(prediction, fb, result), key=pid, event_id=reward_event_id(pid)
        )
        if fb.HasField("label"):
            await self._producer.send(
                # Keyed by model: a version's labels are one ordered stream in one partition, which the
                # drift service's sequential detectors need.
                topics.LABELS, build_label(prediction, fb), key=prediction.model, event_id=label_event_id(pid)
            )
        quality = await self.store.finish(pid, prediction.model, prediction.version, result)
        if quality is not None:
            metrics.publish_quality(quality)

    # -- background --------------------------------------------------------------------------------------
    async def sweep_once(self) -> int:
        """Dead-letter held feedback past its TTL; returns how many were sent."""
        now = self._clock()
        sent = 0
        for pid in await self.store.due(now, self._settings.sweep_batch):
            expired = await self.store.claim_expired(pid, now)
            if expired is None:
                continue
            record = Envelope(
                topic=topics.FEEDBACK_RAW,
                value=expired.feedback,
                key=pid.encode(),
                headers={EVENT_ID: feedback_event_id(pid)},
                partition=expired.partition,
                offset=expired.offset,
            )
            await dead_letter(self._producer, record, EXPIRED_REASON, "prediction_id")
            if await self.store.finish_expired(pid):
                metrics.JOIN_RESULTS.labels("expired").inc()
                sent += 1
        return sent

    async def refresh_gauges(self) -> None:
        for model, version in await self.store.versions():
            q = await self.store.quality(model, version)
            if q is not None:
                metrics.publish_quality(q)
        metrics.PENDING.set((await self.store.stats())["pending"])

    async def stop(self) -> None:
        """End :meth:`run_sweeper` at its next pause, so that the service's stop does not wait on it."""
        self._stopping.set()

    async def run_sweeper(self) -> None:
        """Background task: sweep expired feedback and refresh the gauges until stopped or cancelled."""
        last_refresh = 0.0
        while not self._stopping.is_set():
            try:
                await self.sweep_once()
                if time.monotonic() - last_refresh >= self._settings.quality_refresh_s:
                    await self.refresh_gauges()
                    last_refresh = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("feedback sweep failed; retrying next round")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._settings.sweep_interval_s)
