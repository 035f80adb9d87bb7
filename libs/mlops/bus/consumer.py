"""At-least-once consumption with aiokafka: offsets are committed only after the handler finished
every record of a batch, records that can never be processed go to the dead-letter topic, and the
handler runs inside a span continuing the producer's trace."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from opentelemetry import trace

from mlops import telemetry
from mlops.bus import topics
from mlops.bus.deadletter import dead_letter
from mlops.bus.envelope import Envelope, decode_headers
from mlops.bus.lag import LagGauge
from mlops.bus.producer import Producer
from mlops.errors import MlopsError, PoisonRecord
from mlops.settings import PlatformSettings

log = logging.getLogger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]


def build_consumer(settings: PlatformSettings, topic: str, group: str, **overrides: object) -> AIOKafkaConsumer:
    """An aiokafka consumer of the logical ``topic`` for ``group``, configured the platform's way: manual
    commits, the group timings from settings, prefixes applied. ``overrides`` win."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": settings.topic_prefix + group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.consumer_session_timeout_ms,
        "heartbeat_interval_ms": settings.consumer_heartbeat_interval_ms,
        "rebalance_timeout_ms": settings.consumer_rebalance_timeout_ms,
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        **overrides,
    }
    return AIOKafkaConsumer(topics.name(topic, settings), **options)  # type: ignore[arg-type]


class Consumer:
    """Runs ``handler`` on each record of ``topic`` for consumer group ``group``.

    A handler raising :class:`PoisonRecord` (or any :class:`MlopsError` meaning bad input) sends the record
    to ``events.deadletter``; any other exception is retried with backoff, so nothing is skipped silently.
    """

    def __init__(
        self,
        settings: PlatformSettings,
        topic: str,
        group: str,
        handler: Handler,
        producer: Producer,
        *,
        max_records: int = 500,
        auto_offset_reset: str = "earliest",
        before_commit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.topic = topic
        self.group = group
        self._settings = settings
        self._handler = handler
        self._producer = producer
        self._max_records = max_records
        self._auto_offset_reset = auto_offset_reset
        # Runs after a batch's records were handled and before its offsets are committed: handlers that
        # buffer (e.g. Parquet writers) flush here, so a committed offset always means durable output.
        self._before_commit = before_commit
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self.assigned = False

    def _build(self) -> AIOKafkaConsumer:
        return build_consumer(self._settings, self.topic, self.group, max_poll_records=self._max_records,
                              auto_offset_reset=self._auto_offset_reset)

    async def run(self) -> None:
        self._consumer = self._build()
        await self._consumer.start()
        log.info("consuming %s as group %s", self.topic, self.group)
        lag = asyncio.ensure_future(LagGauge(self._consumer, self.group, self.topic).run())
        try:
            while not self._stopping.is_set():
                batches = await self._consumer.getmany(timeout_ms=500, max_records=self._max_records)
                self.assigned = bool(self._consumer.assignment())
                if not batches:
                    continue
                for records in batches.values():
                    for record in records:
                        await self._handle(record)
                await self._run_before_commit()
                await self._commit()
        finally:
            lag.cancel()
            try:
                await self._consumer.stop()
            except KafkaError:
                log.exception("closing consumer for %s", self.topic)

    async def stop(self) -> None:
        self._stopping.set()

    async def _run_before_commit(self) -> None:
        attempt = 0
        while self._before_commit is not None:
            try:
                await self._before_commit()
                return
            except Exception as exc:
                attempt += 1
                log.warning("flush before commit on %s failed (attempt %d): %r", self.topic, attempt, exc)
                if self._stopping.is_set():
                    raise
                await asyncio.sleep(min(5.0, 0.2 * attempt))

    async def _commit(self) -> None:
        assert self._consumer is not None
        for attempt in range(5):
            try:
                await self._consumer.commit()
                return
            except KafkaError as exc:
                # After a rebalance the records are redelivered to the new owner; handlers are idempotent.
                log.warning("offset commit failed (attempt %d): %s", attempt + 1, exc)
                await asyncio.sleep(0.2 * (attempt + 1))

    async def _handle(self, record) -> None:  # type: ignore[no-untyped-def]
        env = Envelope(
            topic=self.topic,
            value=record.value or b"",
            key=record.key,
            headers=decode_headers(record.headers),
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
        )
        ctx = telemetry.extract_context(env.headers)
        span_attrs = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": record.topic,
            "messaging.consumer.group.name": self.group,
            "messaging.kafka.offset": record.offset,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.message.id": env.event_id,
        }
        with telemetry.tracer().start_as_current_span(
            f"process {self.topic}", context=ctx, kind=trace.SpanKind.CONSUMER, attributes=span_attrs
        ) as span:
            for attempt in range(1, 10_000):
                try:
                    await self._handler(env)
                    telemetry.RECORDS_CONSUMED.labels(telemetry.service_name(), self.topic, "ok").inc()
                    return
                except PoisonRecord as exc:
                    await self._poison(env, exc.message, exc.field, span)
                    return
                except MlopsError as exc:
                    if exc.http_status < 500:
                        await self._poison(env, f"{exc.code}: {exc.message}", exc.field, span)
                        return
                    await self._backoff(env, exc, attempt)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._backoff(env, exc, attempt)

    async def _poison(self, env: Envelope, reason: str, field: str | None, span: trace.Span) -> None:
        span.set_attribute("mlops.dead_letter.reason", reason)
        await dead_letter(self._producer, env, reason, field)
        telemetry.RECORDS_CONSUMED.labels(telemetry.service_name(), self.topic, "dead_letter").inc()

    async def _backoff(self, env: Envelope, exc: Exception, attempt: int) -> None:
        telemetry.RECORDS_CONSUMED.labels(telemetry.service_name(), self.topic, "retry").inc()
        delay = min(5.0, 0.1 * 2 ** min(attempt, 6))
        log.warning(
            "handler for %s@%s/%s failed (attempt %d, retry in %.1fs): %r",
            self.topic, env.partition, env.offset, attempt, delay, exc,
        )
        if self._stopping.is_set():
            # Leave the offset uncommitted: the record is redelivered after restart.
            raise asyncio.CancelledError
        await asyncio.sleep(delay)
