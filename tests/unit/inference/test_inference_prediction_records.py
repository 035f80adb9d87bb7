"""The prediction log with a recording producer: one record per row, ids, named inputs, context parameters,
the request's trace in each record, the opt-out parameter, a bounded buffer, retries after broker errors."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import torch
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider

from mlops.v1 import events_pb2
from services.inference import metrics
from services.inference.batcher import DynamicBatcher
from services.inference.core import DataPlane, InferRequest, Tensor
from services.inference.prediction_log import Entry, PredictionLog, row_ids, to_records
from services.inference.repository import LoadedVersion, ModelRepository
from services.inference.runtime import TorchScriptRuntime
from services.inference.settings import InferenceSettings


class RecordingProducer:
    """``send_many`` as the platform's producer has it, keeping what was sent and the trace it was sent in."""

    def __init__(self, failures: int = 0) -> None:
        self.sent: list[tuple[str, events_pb2.Prediction, str, str]] = []
        self.failures = failures
        self.calls = 0

    async def send_many(self, topic: str, items: list[tuple[str | None, events_pb2.Prediction, str]],
                        trace_headers: list[list[tuple[str, bytes]]] | None = None) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker down")
        assert trace_headers is not None and len(trace_headers) == len(items)
        for (_, record, event_id), headers in zip(items, trace_headers, strict=True):
            traceparent = dict(headers).get("traceparent", b"00-" + b"0" * 32).decode()
            self.sent.append((topic, record, event_id, traceparent.split("-")[1]))


def entry(pid: str, rows: int, **params: object) -> Entry:
    x = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    return Entry(prediction_id=pid, model="m", version="3", features=("a", "b"), inputs=x, outputs=x * 10,
                 latency_ms=1.5, time_ns=1_700_000_000_250_000_000, context=otel_context.get_current(),
                 parameters=dict(params))


def test_one_record_per_row_with_named_inputs_and_context() -> None:
    records = to_records(entry("p", 2, endpoint="ep", variant="v1", unit_id="u", shadow=True, other="x"))
    assert [(key, event_id) for key, _, event_id in records] == [("p-0", "prediction:p-0"), ("p-1", "prediction:p-1")]
    first = records[0][1]
    assert (first.prediction_id, first.model, first.version) == ("p-0", "m", "3")
    assert dict(first.features) == {"a": 0.0, "b": 1.0} and list(first.outputs) == [0.0, 10.0]
    assert (first.endpoint, first.variant, first.unit_id, first.shadow) == ("ep", "v1", "u", True)
    assert first.latency_ms == 1.5 and first.time.ToNanoseconds() == 1_700_000_000_250_000_000
    assert row_ids("q", 1) == ["q"] and to_records(entry("q", 1))[0][1].prediction_id == "q"


async def test_records_are_published_in_each_requests_trace() -> None:
    producer = RecordingProducer()
    log = PredictionLog(producer)  # type: ignore[arg-type]
    task = asyncio.create_task(log.run())
    traces = []
    tracer = TracerProvider().get_tracer("test")
    for pid in ("a", "b"):
        with tracer.start_as_current_span(f"request {pid}") as span:
            traces.append(format(span.get_span_context().trace_id, "032x"))
            assert log.record(entry(pid, 2 if pid == "a" else 1))
    await log.close()
    await task
    assert len(set(traces)) == 2 and "0" * 32 not in traces
    assert [(r.prediction_id, t) for _, r, _, t in producer.sent] == [
        ("a-0", traces[0]), ("a-1", traces[0]), ("b", traces[1])]
    assert producer.calls == 1  # the batch in one send, not a send per request
    assert {topic for topic, *_ in producer.sent} == {"predictions"}


async def test_a_full_buffer_drops_and_counts() -> None:
    log = PredictionLog(RecordingProducer(), max_rows=3)  # type: ignore[arg-type]
    dropped = metrics.PREDICTIONS_LOGGED.labels("dropped")
    before = dropped._value.get()
    assert log.record(entry("a", 2))
    assert not log.record(entry("b", 2))
    assert log.record(entry("c", 1))
    assert dropped._value.get() - before == 2 and log.buffered_rows == 3


async def test_a_failed_publish_is_retried() -> None:
    producer = RecordingProducer(failures=2)
    log = PredictionLog(producer)  # type: ignore[arg-type]
    task = asyncio.create_task(log.run())
    log.record(entry("a", 1))
    await log.close(timeout_s=30)
    await task
    assert [r.prediction_id for _, r, _, _ in producer.sent] == ["a"]


@pytest.fixture
async def plane() -> DataPlane:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 1)), buf)
    runtime = TorchScriptRuntime.load(buf.getvalue(), torch.device("cpu"))
    batcher = DynamicBatcher(runtime.forward, labels=("m", "1"))
    batcher.start()
    repo = ModelRepository(source=None, settings=InferenceSettings())  # type: ignore[arg-type]
    repo._install(LoadedVersion(model="m", version="1", stage="production", sha256="", input_name="input",
                                output_name="output", features=("a", "b"), classes=(), n_outputs=1,
                                runtime=runtime, batcher=batcher))
    return DataPlane(repo, PredictionLog(RecordingProducer()))  # type: ignore[arg-type]


async def test_the_data_plane_logs_unless_the_caller_logs_itself(plane: DataPlane) -> None:
    log = plane.prediction_log
    assert log is not None
    x = Tensor("input", "FP32", np.ones((3, 2), dtype=np.float32))
    logged = await plane.infer(InferRequest(model="m", inputs=[x]))
    assert logged.parameters["prediction_id"] and log.buffered_rows == 3
    own = await plane.infer(InferRequest(model="m", inputs=[x], parameters={"prediction_id": "mine"}))
    assert own.parameters == {"prediction_id": "mine"} and log.buffered_rows == 6
    quiet = await plane.infer(InferRequest(model="m", inputs=[x], parameters={"prediction_log": False}))
    assert quiet.parameters == {} and log.buffered_rows == 6
    await plane.repository.close()
