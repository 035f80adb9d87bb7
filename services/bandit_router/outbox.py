"""What the router sends after it has answered: ``Prediction`` records to Kafka, and inference latency
samples to Redis, both off the response path.

Why: the answer waits only for what it needs (inference, and the decision in Redis). Sending the record
right after the answer still cost ~0.35 ms of the next request's latency on this machine (the send's
CPU lands on the event loop just as the response goes out), so records wait ``linger_s`` and go out
together -- or sooner, when the next prediction starts waiting for inference (:meth:`Outbox.kick`), so
the send's CPU fills time the event loop would spend waiting anyway -- each under its own request's
trace context (its ``send predictions`` span stays a child of
the request's span). Latency samples are counted in the process and added to the histogram every
``latency_flush_s`` in one Redis step; the canary guardrails read it once a second anyway.

The guarantee: an answered prediction's record is never lost by a crash of this process. Each record is
appended to a local write-ahead :class:`~mlops.bus.journal.Journal` before :meth:`Outbox.put` returns (so
before the answer goes out) and acknowledged there once the broker acknowledged it; after a kill -9 the
restarted process, or a surviving replica sharing the journal's directory, republishes what was never
acknowledged (consumers dedup by ``event_id``). A failed send is retried (with backoff) ahead of newer
records; the outbox holds at most ``max_records`` (sent plus unacknowledged), and when it is full, new
predictions wait for room for up to ``put_timeout_s`` and then fail as unavailable instead of answering
without their record. A graceful stop sends everything still held (:meth:`drain`). Without a journal
(``journal=None``) a crash loses the records of the last ``linger_s`` plus the send in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from mlops.bus.journal import Journal, JournalRecord
from mlops.errors import Unavailable
from mlops.v1 import events_pb2
from services.bandit_router.store import RouterStore

log = logging.getLogger(__name__)

Publish = Callable[[events_pb2.Prediction], Awaitable[None]]


def prediction_event_id(record: events_pb2.Prediction) -> str:
    """The record's ``event_id`` on ``predictions``: the same on every send, so consumers drop a resend."""
    return f"prediction:{record.prediction_id}"


def prediction_key(record: events_pb2.Prediction) -> str:
    """Keyed by model:version, so one version's predictions share a partition (drift follows each version's
    stream in order)."""
    return f"{record.model}:{record.version}"


class Outbox:
    """Batches ``Prediction`` records for Kafka and latency samples for Redis, sent in the background."""

    def __init__(
        self,
        publish: Publish | None,
        store: RouterStore,
        linger_s: float = 0.005,
        max_records: int = 10_000,
        put_timeout_s: float = 5.0,
        latency_flush_s: float = 0.1,
        journal: Journal | None = None,
    ) -> None:
        self._publish = publish
        self._journal = journal
        self._store = store
        self._linger_s = linger_s
        self._max_records = max_records
        self._put_timeout_s = put_timeout_s
        self._latency_flush_s = latency_flush_s
        # Each record with the context of the request that made it, so its span joins that trace.
        self._records: deque[tuple[events_pb2.Prediction, contextvars.Context]] = deque()
        self._in_flight = 0
        self._latency: dict[str, dict[tuple[str, int], int]] = {}
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._closing = False
        self._sender: asyncio.Task[None] | None = None
        self._lingering: asyncio.Future[None] | None = None
        self._counter: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        """Records not yet acknowledged by the broker (queued or being sent)."""
        return len(self._records) + self._in_flight

    async def put(self, record: events_pb2.Prediction) -> None:
        """Queue ``record``; waits while the outbox is full, and fails as unavailable after ``put_timeout_s``."""
        if self._publish is None:
            return
        if self.held >= self._max_records:
            await self._wait_for_room()
        if self._journal is not None:
            # Durable from here on, so the answer may go out.
            self._journal.append(JournalRecord(prediction_event_id(record), prediction_key(record),
                                               record.SerializeToString()))
        self._records.append((record, contextvars.copy_context()))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_loop())
        self._wake.set()

    async def _wait_for_room(self) -> None:
        deadline = time.monotonic() + self._put_timeout_s
        while self.held >= self._max_records:
            self._room.clear()
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                await asyncio.wait_for(self._room.wait(), left)
            except TimeoutError:
                raise Unavailable(
                    f"{self.held} predictions are waiting for the broker; not answering more until they are sent"
                ) from None

    def count_latency(self, endpoint: str, variant: str, bucket: int) -> None:
        """One inference latency sample (a histogram bucket) of ``variant``, added to Redis shortly."""
        counts = self._latency.setdefault(endpoint, {})
        counts[(variant, bucket)] = counts.get((variant, bucket), 0) + 1
        if self._counter is None or self._counter.done():
            self._counter = asyncio.get_running_loop().create_task(self._latency_loop())

    # -- background ----------------------------------------------------------------------------------
    async def _send_loop(self) -> None:
        backoff = 0.0
        while True:
            await self._wake.wait()
            if backoff:
                await asyncio.sleep(backoff)
            elif self._linger_s > 0 and not self._closing:
                await self._linger()
            self._wake.clear()
            failed = await self._send_batch()
            if failed:
                backoff = min(max(backoff * 2, 0.2), 5.0)
                self._wake.set()
            else:
                backoff = 0.0
            if not self._records and self._closing:
                return

    async def _linger(self) -> None:
        """Let more records join this batch: until ``linger_s`` passes or :meth:`kick` ends it sooner."""
        loop = asyncio.get_running_loop()
        self._lingering = waiter = loop.create_future()
        timer = loop.call_later(self._linger_s, _settle, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._lingering = None

    def kick(self) -> None:
        """Send what is queued at the next chance. The router calls it right before it awaits inference:
        the send's CPU then lands while the event loop would otherwise wait for the model, not on a
        response's way out."""
        if self._lingering is not None:
            _settle(self._lingering)

    async def _send_batch(self) -> int:
        """Send what is queued; failed records go back to the front. Returns how many failed."""
        assert self._publish is not None
        batch = list(self._records)
        self._records.clear()
        self._in_flight += len(batch)
        loop = asyncio.get_running_loop()
        try:
            # One task per record, in the record's own context: the producer's span and trace headers
            # belong to the request that made the prediction.
            tasks = [loop.create_task(self._publish(record), context=ctx) for record, ctx in batch]
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._in_flight -= len(batch)
        failed = [item for item, result in zip(batch, results, strict=True) if isinstance(result, BaseException)]
        if self._journal is not None:
            self._journal.ack(prediction_event_id(record) for (record, _), result in zip(batch, results, strict=True)
                              if not isinstance(result, BaseException))
        if failed:
            log.warning("sending %d of %d predictions failed (%r); retrying", len(failed), len(batch),
                        next(r for r in results if isinstance(r, BaseException)))
            self._records.extendleft(reversed(failed))
        self._room.set()
        return len(failed)

    async def _latency_loop(self) -> None:
        while self._latency:
            await asyncio.sleep(self._latency_flush_s)
            await self._flush_latency()

    async def _flush_latency(self) -> None:
        pending, self._latency = self._latency, {}
        for endpoint, counts in pending.items():
            try:
                await self._store.add_latencies(endpoint, counts)
            except Exception:
                # A latency sample is a guardrail input, not a record anyone waits for: count it next time.
                log.warning("adding latency samples of %s failed; retrying", endpoint, exc_info=True)
                mine = self._latency.setdefault(endpoint, {})
                for key, n in counts.items():
                    mine[key] = mine.get(key, 0) + n

    async def flush(self) -> None:
        """Send everything held now (tests, and :meth:`drain`)."""
        while self.held:
            if self._records and not self._in_flight:
                if await self._send_batch():
                    await asyncio.sleep(0.2)  # the broker is in trouble: do not spin
            else:
                await asyncio.sleep(0.001)  # the sender has a batch out: let it finish
        await self._flush_latency()

    async def drain(self, timeout_s: float) -> None:
        """On stop: send everything held (up to ``timeout_s``), then stop the background tasks."""
        self._closing = True
        try:
            await asyncio.wait_for(self.flush(), timeout_s)
        except TimeoutError:
            log.error("stopping with %d predictions not acknowledged by the broker", self.held)
        for task in (self._sender, self._counter):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._journal is not None:
            self._journal.close()  # what is still unacknowledged stays journaled for the next process

    async def recover(self, republish: Callable[[list[JournalRecord]], Awaitable[None]]) -> int:
        """Republish what stopped processes journaled but never had acknowledged; how many records."""
        return await self._journal.recover(republish) if self._journal is not None else 0


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
