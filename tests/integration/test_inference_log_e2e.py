"""The prediction log against the real stack: every prediction served over V2 (gRPC or REST) becomes one
``Prediction`` record per row on ``predictions`` (model, version, named inputs, outputs, latency), in the
trace of the request that made it, with the prediction id the response carried; a caller that records
its predictions itself (``prediction_log: false``) is not logged twice."""

from __future__ import annotations

import asyncio
import secrets
import uuid

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from mlops.bus import topics
from mlops.settings import PlatformSettings
from mlops.v1 import events_pb2
from tests.integration.inference_support import FEATURES, expected, headers, register, wait_for
from tests.integration.kafka_util import read_until
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

TAG = 4.0


def decode(records: list, model: str) -> list[tuple[events_pb2.Prediction, dict[str, str]]]:
    out = []
    for record in records:
        prediction = events_pb2.Prediction.FromString(record.value)
        if prediction.model == model:
            out.append((prediction, {k: v.decode() for k, v in record.headers or ()}))
    return out


def test_every_prediction_is_logged_once_with_its_trace(stack: Stack) -> None:
    model = f"plog-{uuid.uuid4().hex[:8]}"
    version = register(stack.grpc("registry"), model, TAG, "production").version
    http = thttp.InferenceServerClient(stack.url("inference").removeprefix("http://"))
    wait_for("the model to load", lambda: http.is_model_ready(model, version, headers=headers()))
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"

    # Three rows over gRPC, in the caller's trace.
    x3 = np.arange(12, dtype=np.float32).reshape(3, len(FEATURES)) / 10
    inp = tgrpc.InferInput("input", list(x3.shape), "FP32")
    inp.set_data_from_numpy(x3)
    grpcc = tgrpc.InferenceServerClient(stack.grpc("inference"))
    result = grpcc.infer(model, [inp], headers={**headers(), "traceparent": traceparent})
    grpc_id = result.get_response().parameters["prediction_id"].string_param
    assert grpc_id

    # One row over REST with the caller's own prediction id and context.
    x1 = np.array([[1, -1, 2, -2]], dtype=np.float32)
    rest_in = thttp.InferInput("input", [1, len(FEATURES)], "FP32")
    rest_in.set_data_from_numpy(x1)
    own_id = f"own-{uuid.uuid4().hex}"
    rest = http.infer(model, [rest_in], headers=headers(),
                      parameters={"prediction_id": own_id, "endpoint": "ep-1", "unit_id": "user-9"})
    assert rest.get_response()["parameters"] == {"prediction_id": own_id}

    # A caller that logs its predictions itself: not logged here.
    skipped = f"skip-{uuid.uuid4().hex}"
    quiet = http.infer(model, [rest_in], headers=headers(),
                       parameters={"prediction_log": False, "prediction_id": skipped})
    assert "parameters" not in quiet.get_response()
    # A last logged prediction: once it is on the topic, a record of the skipped one would be too.
    sentinel = f"last-{uuid.uuid4().hex}"
    http.infer(model, [rest_in], headers=headers(), parameters={"prediction_id": sentinel})

    wanted = {f"{grpc_id}-0", f"{grpc_id}-1", f"{grpc_id}-2", own_id, sentinel}
    full = topics.name(topics.PREDICTIONS, PlatformSettings())
    records = asyncio.run(read_until(stack.kafka, full, lambda recs: wanted <= {
        p.prediction_id for p, _ in decode(recs, model)}, timeout_s=60))
    logged = decode(records, model)
    by_id = {p.prediction_id: (p, h) for p, h in logged}
    assert set(by_id) == wanted, sorted(by_id)  # each once, the skipped one absent
    assert len(logged) == len(wanted)

    for i in range(3):
        p, h = by_id[f"{grpc_id}-{i}"]
        assert (p.model, p.version) == (model, version)
        assert dict(p.features) == pytest.approx(dict(zip(FEATURES, x3[i].tolist(), strict=True)))
        assert list(p.outputs) == pytest.approx(expected(x3[i : i + 1], TAG)[0].tolist())
        assert p.latency_ms > 0 and p.time.seconds > 0 and not p.endpoint
        assert h["event_id"] == f"prediction:{p.prediction_id}"
        assert h["traceparent"].split("-")[1] == trace_id  # the record is in the request's trace

    p, h = by_id[own_id]
    assert (p.endpoint, p.unit_id) == ("ep-1", "user-9")
    assert list(p.outputs) == pytest.approx(expected(x1, TAG)[0].tolist())
    assert h["traceparent"].split("-")[1] != trace_id
