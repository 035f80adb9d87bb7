"""Kafka adapter of the feature service: one consumer group (``feature``) on ``events.validated`` feeds both
stores, so each event is fetched and decoded once.

Each batch is applied to the online store at once (Redis, idempotent by event_id) and its rows are
buffered for the offline store; the rows are written as Parquet every ``offline_flush_s`` (or sooner,
at ``offline_flush_rows``), and offsets are committed only after that write, so a committed offset
always means a durable row and a kill -9 only redelivers what the online store will skip. A failing
Parquet write does not stop the online store: batches keep flowing, uncommitted, until
``offline_max_pending`` rows wait; then the consumer stops and retries (lag alerts fire).

A record that is not a ``ValidatedEvent`` goes to ``events.deadletter``.

Two stages for the batch consumer: :func:`prepare_validated` decodes a batch and encodes its Redis calls
(CPU) while other batches are applied by :func:`on_validated` (Redis round trips).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from mlops.bus.deadletter import dead_letter
from mlops.bus.envelope import Envelope
from mlops.bus.producer import Producer
from mlops.errors import Unavailable
from mlops.v1 import events_pb2
from services.feature.core import FeatureCore, PreparedEvents, decode

log = logging.getLogger(__name__)

BatchHandler = Callable[["ValidatedBatch", bool], Awaitable[bool]]


def _decoded(envelopes: Sequence[Envelope]
             ) -> tuple[list[tuple[str, events_pb2.ValidatedEvent]], list[tuple[Envelope, str]]]:
    good, bad = [], []
    for env in envelopes:
        try:
            good.append((env.event_id, decode(env.value)))
        except DecodeError as exc:
            bad.append((env, f"bad_payload: not a ValidatedEvent ({exc})"))
    return good, bad


@dataclass
class ValidatedBatch:
    """A batch of ``events.validated`` prepared: the events decoded and encoded for both stores (None
    when there are none), and the records that are not ValidatedEvents, for the dead-letter topic."""

    prepared: PreparedEvents | None
    bad: list[tuple[Envelope, str]]


def prepare_validated(core: FeatureCore) -> Callable[[Sequence[Envelope]], ValidatedBatch]:
    """The CPU stage of a batch, which the batch consumer runs while other batches are in Redis."""

    def prepare(envelopes: Sequence[Envelope]) -> ValidatedBatch:
        good, bad = _decoded(envelopes)
        return ValidatedBatch(core.prepare(good) if good else None, bad)

    return prepare


def on_validated(core: FeatureCore, producer: Producer, flush_s: float, flush_rows: int,
                 max_pending: int) -> BatchHandler:
    async def handle(batch: ValidatedBatch, final: bool) -> bool:
        if batch.prepared is not None:
            await core.apply_prepared(batch.prepared)
        for env, reason in batch.bad:
            await dead_letter(producer, env, reason)
        offline = core.offline
        if not (final or offline.pending >= flush_rows or offline.age_s >= flush_s):
            return offline.pending == 0
        try:
            await offline.flush()
        except Exception as exc:
            if final or offline.pending >= max_pending:
                raise Unavailable(f"the offline store cannot be written: {exc!r}") from exc
            log.warning("offline flush of %d rows failed (online updates continue, offsets wait): %r",
                        offline.pending, exc)
            return False
        # Not simply True: other lanes may have buffered rows while this flush wrote, and "committable"
        # means every record handled so far is durable (kill -9 then would lose their offline rows).
        return offline.pending == 0

    return handle
