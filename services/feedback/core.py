"""The feedback service's logic: accept outcomes, join them to predictions exactly once, keep online
quality, and dead-letter feedback whose prediction never came. Transports call into :class:`FeedbackCore`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from mlops.bus import topics
from mlops.bus.deadletter import dead_letter
from mlops.bus.envelope import EVENT_ID, Envelope
from mlops.bus.producer import Producer
from mlops.errors import InvalidArgument, NotFound
from mlops.v1 import events_pb2
from services.feedback import metrics
from services.feedback.join import Quality, feedback_event_id, validate_feedback
from services.feedback.plan import FeedbackItem, Plan, PredictionItem, Seen, plan_feedback, plan_predictions
from services.feedback.settings import FeedbackSettings
from services.feedback.store import JoinStore

log = logging.getLogger(__name__)

EXPIRED_REASON = "unmatched feedback after TTL"


#: read-plan-write rounds of one batch before it is handed back for a retry with backoff
MAX_PLAN_ROUNDS = 5


class JoinConflict(Exception):
    """The batch's join state kept changing under it; the batch consumer retries it with backoff."""


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
    async def join_feedback(self, items: list[FeedbackItem]) -> None:
        """Join a batch of feedback records (one partition's, in order): one read and one write in Redis,
        then one send of the batch's rewards and labels."""
        plan = await self._settle(lambda: self.store.read_for_feedback(items), lambda seen: plan_feedback(items, seen))
        await self._emit(plan)

    async def join_predictions(self, items: list[PredictionItem]) -> None:
        """Store a batch of predictions (one round trip) and join the feedback that waited for them."""
        plan = await self._settle(lambda: self.store.store_predictions(items),
                                  lambda seen: plan_predictions(items, seen))
        await self._emit(plan)

    async def _settle(self, read: Callable[[], Awaitable[dict[str, Seen]]], decide: Callable[[dict[str, Seen]], Plan]
                      ) -> Plan:
        """Read, plan and write until the write finds what the plan was made on (another consumer may join
        one of the batch's ids in between; rare, so a few rounds always do)."""
        for _ in range(MAX_PLAN_ROUNDS):
            plan = decide(await read())
            if not plan.writes:
                break
            qualities = await self.store.apply(plan, self._clock())
            if qualities is not None:
                for q in qualities:
                    metrics.publish_quality(q)
                break
            metrics.JOIN_RESULTS.labels("conflict").inc()
        else:
            raise JoinConflict(f"the batch's join state kept changing over {MAX_PLAN_ROUNDS} rounds")
        for result, n in (("joined", len(plan.joins)), ("held", len(plan.holds)), ("duplicate", plan.duplicates),
                          ("reemitted", plan.reemitted), ("unrecoverable", len(plan.unrecoverable))):
            if n:
                metrics.JOIN_RESULTS.labels(result).inc(n)
        if plan.unrecoverable:
            log.error("joins of %d prediction(s) could not be re-emitted (their predictions expired), e.g. %s",
                      len(plan.unrecoverable), plan.unrecoverable[0])
        return plan

    async def _emit(self, plan: Plan) -> None:
        """Send the batch's rewards and labels together and wait for both acknowledgements."""
        sends = [self._producer.send_many(topics.REWARDS, plan.rewards)] if plan.rewards else []
        if plan.labels:
            sends.append(self._producer.send_many(topics.LABELS, plan.labels))
        await asyncio.gather(*sends)

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
