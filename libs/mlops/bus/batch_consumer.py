"""At-least-once consumption a batch at a time (aiokafka), for hot paths where per-record work matters.

``mlops.bus.consumer.Consumer`` runs its handler, a span and metrics once per record (about 40 us of
overhead each here), which caps one hop at ~25k records/s on a core. This consumer hands the handler
a partition's records from one poll (up to ``max_records``), with one span (continuing the first
record's trace, linking a few more) and one metrics update per batch, and commits the
batch's offsets only after the handler returned ``True`` (a handler that buffers, such as the Parquet
writer, returns ``False`` until its flush, and the offsets wait). A failing handler is retried with
backoff on the same batch, so nothing is skipped; handlers must be idempotent by ``event_id`` (they are:
redelivery after a crash is the normal case). Records that can never be processed are the handler's
to dead-letter.

Overlapped, so that one process keeps its core busy instead of waiting on Redis or the broker half the
time:

- one lane per partition: a partition's batches are handled one at a time, in order (batch N's effects
  before batch N+1's); different partitions' batches are handled concurrently (records with one key, one
  entity, are always in one partition);
- two stages: an optional ``prepare(envelopes)`` does a batch's CPU work (decode, validate, encode) while
  other batches' handlers wait.

The offsets committed are exactly those of the batches handled, never of a batch fetched and prepared
but not yet handled. Handlers must allow concurrent calls for different partitions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from opentelemetry import trace
from opentelemetry.context import Context

from mlops import telemetry
from mlops.bus.consumer import build_consumer
from mlops.bus.envelope import Envelope, decode_headers
from mlops.bus.lag import LAG_INTERVAL_S, LagGauge
from mlops.settings import PlatformSettings

log = logging.getLogger(__name__)

#: while every free partition is empty, how long to wait for a busy lane before polling again
_LANE_WAIT_S = 0.01
MAX_LINKS = 16  # traces of further records of a batch linked from its span (links cost a little each)

#: ``handler(batch, final)`` handles a batch (possibly empty: it is also called on idle polls while
#: records wait uncommitted, so time-based flushes happen, and with ``final`` before the last commit);
#: it returns whether every record handled so far may be committed now. With a ``prepare`` stage, the
#: batch it gets is what ``prepare`` returned for the envelopes (``prepare([])`` on idle polls).
BatchHandler = Callable[[Any, bool], Awaitable[bool]]
#: ``prepare(envelopes)``: the CPU part of handling a batch, with no I/O and no effects, so that it may
#: run before the previous batch is handled (and run again if the handler must be retried)
Prepare = Callable[[Sequence[Envelope]], Any]


class _PrepareFailed:
    """What ``prepare`` raised: raised again, by a second try, inside the handler's retry loop."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class BatchConsumer:
    def __init__(self, settings: PlatformSettings, topic: str, group: str, handler: BatchHandler, *,
                 prepare: Prepare | None = None, max_records: int = 2000, poll_ms: int = 200,
                 lag_interval_s: float = LAG_INTERVAL_S) -> None:
        self.topic = topic
        self.group = group
        self._settings = settings
        self._handler = handler
        self._prepare: Prepare = prepare or (lambda envelopes: envelopes)
        self._max_records = max_records
        self._poll_ms = poll_ms
        self._lag_interval_s = lag_interval_s
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._uncommitted: dict[TopicPartition, int] = {}  # next offset per partition, of batches handled
        self._commit_lock = asyncio.Lock()

    def _build(self) -> AIOKafkaConsumer:
        return build_consumer(self._settings, self.topic, self.group, max_poll_records=self._max_records,
                              max_partition_fetch_bytes=4 * 1024 * 1024)

    async def run(self) -> None:
        """Consume until :meth:`stop`; the last batch is handled and committed before returning."""
        self._consumer = self._build()
        await self._consumer.start()
        log.info("consuming %s in batches as group %s", self.topic, self.group)
        # One lane per partition: a partition's batches are handled one at a time, in order; different
        # partitions' batches are handled concurrently (keys, and so entities, never span partitions).
        lanes: dict[TopicPartition, asyncio.Task[None]] = {}
        assigned_gauge = telemetry.CONSUMER_ASSIGNED.labels(telemetry.service_name(), self.group, self.topic)
        lag = asyncio.ensure_future(LagGauge(self._consumer, self.group, self.topic, self._lag_interval_s).run())
        try:
            while not self._stopping.is_set():
                for tp, task in list(lanes.items()):
                    if task.done():
                        del lanes[tp]
                        task.result()  # a lane that failed stops the consumer (its offsets stay uncommitted)
                # Fetch only for partitions whose lane is free (a poll drains one partition's buffer first,
                # so asking for all would mostly hand back the busy one); without waiting while lanes work.
                assigned = self._consumer.assignment()
                assigned_gauge.set(len(assigned))
                free = [tp for tp in assigned if tp not in lanes]
                batches = {}
                if free:
                    try:
                        batches = await self._consumer.getmany(*free, timeout_ms=0 if lanes else self._poll_ms,
                                                               max_records=self._max_records)
                    except IllegalStateError:  # a rebalance took one of them meanwhile
                        continue
                if not any(batches.values()):
                    if lanes:
                        await asyncio.wait(lanes.values(), timeout=_LANE_WAIT_S,
                                           return_when=asyncio.FIRST_COMPLETED)
                    elif self._uncommitted:
                        # idle: a buffering handler may flush on time, and what it flushed is committed
                        if await self._handle([], self._prepared([])):
                            await self._commit(dict(self._uncommitted))
                    elif not free:
                        await asyncio.sleep(self._poll_ms / 1000)  # nothing assigned yet
                    continue
                for tp, records in batches.items():
                    if not records:
                        continue
                    envelopes = [
                        Envelope(topic=self.topic, value=r.value or b"", key=r.key,
                                 headers=decode_headers(r.headers), partition=r.partition, offset=r.offset,
                                 timestamp_ms=r.timestamp)
                        for r in records
                    ]
                    work = self._prepared(envelopes)  # while other partitions' batches wait on I/O
                    lanes[tp] = asyncio.ensure_future(
                        self._handle_and_commit(envelopes, work, {tp: records[-1].offset + 1}))
            await self._drain(lanes)
            # a last call with nothing new lets a buffering handler flush before the final commit
            if self._uncommitted and await self._handle([], self._prepared([]), final=True):
                await self._commit(dict(self._uncommitted))
        finally:
            lag.cancel()
            for task in lanes.values():
                task.cancel()
            try:
                await self._consumer.stop()
            except KafkaError:
                log.exception("closing consumer for %s", self.topic)
            self._stopped.set()

    @staticmethod
    async def _drain(lanes: dict[TopicPartition, asyncio.Task[None]]) -> None:
        while lanes:
            _, task = lanes.popitem()
            await task

    def _prepared(self, envelopes: list[Envelope]) -> Any:
        try:
            return self._prepare(envelopes)
        except Exception as exc:  # raised again where the handler's failures are retried
            return _PrepareFailed(exc)

    async def _handle_and_commit(self, envelopes: list[Envelope], work: Any,
                                 offsets: dict[TopicPartition, int]) -> None:
        ok = await self._handle(envelopes, work)
        self._uncommitted.update(offsets)
        if ok:
            await self._commit(dict(self._uncommitted))

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the loop to finish its batch and commit, and wait for it (up to ``timeout_s``)."""
        self._stopping.set()
        if self._consumer is not None:
            try:
                await asyncio.wait_for(self._stopped.wait(), timeout_s)
            except TimeoutError:
                log.warning("consumer of %s did not stop within %.0fs", self.topic, timeout_s)

    async def _handle(self, envelopes: list[Envelope], work: Any, final: bool = False) -> bool:
        attempt = 0
        while True:
            try:
                if isinstance(work, _PrepareFailed):
                    work = self._prepare(envelopes)  # raises again (or, if it was transient, goes on)
                if not envelopes:
                    return await self._handler(work, final)
                parent, links = self._trace(envelopes)
                attributes: dict[str, str | int] = {
                    "messaging.system": "kafka", "messaging.operation.type": "process",
                    "messaging.destination.name": self.topic, "messaging.consumer.group.name": self.group,
                    "messaging.batch.message_count": len(envelopes)}
                if len(envelopes) == 1:
                    attributes["messaging.message.id"] = envelopes[0].event_id
                with telemetry.tracer().start_as_current_span(
                    f"process {self.topic}", context=parent, kind=trace.SpanKind.CONSUMER, links=links,
                    attributes=attributes,
                ):
                    ok = await self._handler(work, final)
                telemetry.RECORDS_CONSUMED.labels(telemetry.service_name(), self.topic, "ok").inc(len(envelopes))
                return ok
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                telemetry.RECORDS_CONSUMED.labels(telemetry.service_name(), self.topic, "retry").inc(len(envelopes))
                delay = min(5.0, 0.1 * 2 ** min(attempt, 6))
                log.warning("batch of %d from %s failed (attempt %d, retry in %.1fs): %r",
                            len(envelopes), self.topic, attempt, delay, exc)
                if self._stopping.is_set() and attempt >= 3:
                    # Leave the offsets uncommitted: the batch is redelivered after the restart.
                    raise asyncio.CancelledError from exc
                await asyncio.sleep(delay)

    @staticmethod
    def _trace(envelopes: list[Envelope]) -> tuple[Context | None, list[trace.Link]]:
        """The batch's span continues the first record's trace and links the next few records' traces
        (a batch of one, the common case at low rates, stays in its producer's trace)."""
        carriers = [env.headers for env in envelopes[: 1 + MAX_LINKS] if "traceparent" in env.headers]
        if not carriers:
            return None, []
        parent = telemetry.extract_context(carriers[0])
        links = []
        for headers in carriers[1:]:
            ctx = trace.get_current_span(telemetry.extract_context(headers)).get_span_context()
            if ctx.is_valid:
                links.append(trace.Link(ctx))
        return parent, links

    async def _commit(self, handled: dict[TopicPartition, int]) -> None:
        """Commit ``handled``: the offsets the handler had just declared committable, taken when it said so
        (of the partitions still assigned: a revoked one's records are redelivered to its new owner).
        Never the offsets as they stand when the commit lock is free: a lane that finished meanwhile with
        records still buffered (a handler answering False) must not be committed by another lane's True."""
        assert self._consumer is not None
        async with self._commit_lock:
            for attempt in range(5):
                assigned = self._consumer.assignment()
                offsets = {tp: offset for tp, offset in handled.items() if tp in assigned}
                try:
                    if offsets:
                        await self._consumer.commit(offsets)
                    for tp, offset in handled.items():
                        if self._uncommitted.get(tp) == offset:
                            del self._uncommitted[tp]
                    return
                except KafkaError as exc:
                    # After a rebalance the records are redelivered to the new owner; handlers are idempotent.
                    log.warning("offset commit on %s failed (attempt %d): %s", self.topic, attempt + 1, exc)
                    await asyncio.sleep(0.2 * (attempt + 1))
