"""The prediction log: every prediction served, one ``Prediction`` record per row on the ``predictions`` topic.

A record carries the prediction id, model, version, the row's inputs (named by the version's signature),
its outputs, the request's latency and time, and, in its ``traceparent`` header, the trace of the request
that made it (the consumer's span continues that request's trace). ``event_id`` is
``prediction:<prediction_id>``, so consumers drop repeats.

The request path only appends one entry to a bounded buffer (no protobuf, no I/O); a background task
builds the records and publishes them in batches. When the buffer is full (the broker is down or slower
than the traffic), a new entry is refused and counted (``mlops_inference_predictions_logged_total
{outcome="dropped"}``) and the request answers 503/UNAVAILABLE (``core.DataPlane.infer``): a prediction
is never answered without its record. A publish that fails is retried with backoff (consumers are
idempotent by event_id, so a partial batch sent twice is harmless).

Callers that record the prediction themselves (the bandit-router publishes its own record, with endpoint
and variant) send the request parameter ``prediction_log: false``; callers may also pass ``prediction_id``,
``endpoint``, ``variant``, ``entity_id``, ``unit_id`` (strings) and ``shadow`` (bool), which are copied
into the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import timestamp_pb2
from opentelemetry import context as otel_context

from mlops import telemetry
from mlops.bus import topics
from mlops.bus.producer import Producer
from mlops.v1 import events_pb2
from services.inference import metrics

log = logging.getLogger(__name__)

#: request parameters copied into the record.
CONTEXT_FIELDS = ("endpoint", "variant", "entity_id", "unit_id")


@dataclass(slots=True)
class Entry:
    """One served request, as the request path hands it over."""

    prediction_id: str
    model: str
    version: str
    features: tuple[str, ...]
    inputs: np.ndarray
    outputs: np.ndarray
    latency_ms: float
    time_ns: int
    context: otel_context.Context
    parameters: dict[str, Any]


def new_prediction_id() -> str:
    return uuid.uuid4().hex


def row_ids(prediction_id: str, rows: int) -> list[str]:
    """The prediction id of each row: the request's id for one row, ``<id>-<row>`` for several."""
    return [prediction_id] if rows == 1 else [f"{prediction_id}-{i}" for i in range(rows)]


def to_records(entry: Entry) -> list[tuple[str, events_pb2.Prediction, str]]:
    """``(key, record, event_id)`` for each row of ``entry``."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(entry.time_ns)
    names = entry.features or tuple(f"f{i}" for i in range(entry.inputs.shape[1] if entry.inputs.ndim > 1 else 1))
    inputs = entry.inputs.reshape(entry.inputs.shape[0], -1).tolist()
    outputs = entry.outputs.reshape(entry.outputs.shape[0], -1).tolist()
    extra = {k: str(entry.parameters[k]) for k in CONTEXT_FIELDS if k in entry.parameters}
    shadow = bool(entry.parameters.get("shadow", False))
    out = []
    for pid, row, result in zip(row_ids(entry.prediction_id, len(inputs)), inputs, outputs, strict=True):
        record = events_pb2.Prediction(
            prediction_id=pid,
            model=entry.model,
            version=entry.version,
            features=dict(zip(names, row, strict=False)),
            outputs=result,
            time=stamp,
            latency_ms=entry.latency_ms,
            shadow=shadow,
            **extra,
        )
        out.append((pid, record, f"prediction:{pid}"))
    return out


class PredictionLog:
    """A bounded buffer of served requests and the task that publishes them to ``predictions``."""

    def __init__(self, producer: Producer, *, max_rows: int = 100_000, batch_rows: int = 2000) -> None:
        self._producer = producer
        self._max_rows = max_rows
        self._batch_rows = batch_rows
        self._buffer: deque[Entry] = deque()
        self._rows = 0
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._closed = False
        self._published = metrics.PREDICTIONS_LOGGED.labels("published")
        self._dropped = metrics.PREDICTIONS_LOGGED.labels("dropped")
        self._failed = metrics.PREDICTIONS_LOGGED.labels("failed")

    @property
    def buffered_rows(self) -> int:
        return self._rows

    def record(self, entry: Entry) -> bool:
        """Hand over a served request; False (and counted) when the buffer is full."""
        n = entry.inputs.shape[0]
        if self._closed or self._rows + n > self._max_rows:
            self._dropped.inc(n)
            return False
        self._buffer.append(entry)
        self._rows += n
        metrics.PREDICTION_LOG_BUFFERED.set(self._rows)
        self._wakeup.set()
        return True

    async def run(self) -> None:
        """Background task: publish buffered entries in batches until closed and drained."""
        backoff = 0.2
        while True:
            if not self._buffer:
                if self._closed:
                    self._drained.set()
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._take()
            try:
                await self._publish(batch)
                backoff = 0.2
            except asyncio.CancelledError:
                self._requeue(batch)
                raise
            except Exception as exc:
                log.warning("publishing %d prediction(s) failed (retry in %.1fs): %r", len(batch), backoff, exc)
                self._failed.inc(sum(e.inputs.shape[0] for e in batch))
                self._requeue(batch)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _take(self) -> list[Entry]:
        batch: list[Entry] = []
        rows = 0
        while self._buffer and (not batch or rows + self._buffer[0].inputs.shape[0] <= self._batch_rows):
            entry = self._buffer.popleft()
            rows += entry.inputs.shape[0]
            batch.append(entry)
        self._rows -= rows
        metrics.PREDICTION_LOG_BUFFERED.set(self._rows)
        return batch

    def _requeue(self, batch: list[Entry]) -> None:
        self._buffer.extendleft(reversed(batch))
        self._rows += sum(e.inputs.shape[0] for e in batch)
        metrics.PREDICTION_LOG_BUFFERED.set(self._rows)

    async def _publish(self, batch: list[Entry]) -> None:
        """The batch's records in one ``send_many`` (one record batch per partition), each with the trace
        headers of the request that made it."""
        items: list[tuple[str | None, events_pb2.Prediction, str]] = []
        traces: list[list[tuple[str, bytes]]] = []
        for entry in batch:
            token = otel_context.attach(entry.context)
            try:
                headers = telemetry.inject_headers()
            finally:
                otel_context.detach(token)
            records = to_records(entry)
            items.extend(records)
            traces.extend([headers] * len(records))
        await self._producer.send_many(topics.PREDICTIONS, items, trace_headers=traces)
        self._published.inc(len(items))

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop taking entries and publish what is buffered (for at most ``timeout_s``)."""
        self._closed = True
        self._wakeup.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        if self._buffer:
            log.warning("stopping with %d prediction record(s) unpublished", self._rows)
