"""drift against the real stack: a shift in a model version's positive-class score raises one alert on
``drift.alerts`` after the shift; counts survive redelivery; REST and gRPC report the same state."""

from __future__ import annotations

import asyncio
import random
import uuid

import grpc
import httpx
import pytest

from mlops.bus import topics
from mlops.bus.producer import Producer
from mlops.grpc_util import channel
from mlops.settings import PlatformSettings
from mlops.v1 import drift_pb2, drift_pb2_grpc, events_pb2
from tests.integration.kafka_util import header, read_until
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

SHIFT_AT, N = 1000, 1600


async def test_a_score_shift_raises_one_alert_after_it(stack: Stack) -> None:
    model = f"dr{uuid.uuid4().hex[:8]}"
    rng = random.Random(5)
    items = []
    for i in range(N):
        p = min(max(rng.gauss(0.2 if i < SHIFT_AT else 0.7, 0.05), 0.0), 1.0)
        pid = f"{model}-{i}"
        items.append((pid, events_pb2.Prediction(prediction_id=pid, model=model, version="1", outputs=[1 - p, p]),
                      f"prediction:{pid}"))
    producer = Producer(PlatformSettings(), client_id="test-drift")
    await producer.start()
    try:
        await producer.send_many(topics.PREDICTIONS, items)
        await producer.send_many(topics.PREDICTIONS, items[:200])  # redelivered
    finally:
        await producer.stop()

    prefix = f"drift:prediction:{model}:1:"

    def alerted(recs: list) -> bool:
        return any((header(x, "event_id") or "").startswith(prefix) for x in recs)

    await read_until(stack.kafka, topics.DRIFT_ALERTS, alerted, timeout_s=90)
    async with httpx.AsyncClient(timeout=30) as http:
        report: dict = {}
        for _ in range(120):
            report = (await http.get(stack.url("drift", f"/v1/drift/{model}/1"))).json()
            if report.get("predictions") == N:
                break
            await asyncio.sleep(0.5)
        assert report["predictions"] == N and report["prediction_drift"] is True
        assert report["prediction_mean"] == pytest.approx((SHIFT_AT * 0.2 + (N - SHIFT_AT) * 0.7) / N, abs=0.01)
        alerts = (await http.get(stack.url("drift", "/v1/alerts"), params={"model": model})).json()["alerts"]
        assert (await http.get(stack.url("drift", f"/v1/drift/{model}/9"))).status_code == 404
    records = await read_until(stack.kafka, topics.DRIFT_ALERTS, lambda _: False, timeout_s=3)
    ids = [header(x, "event_id") for x in records if (header(x, "event_id") or "").startswith(prefix)]
    assert len(ids) == 1 and int(ids[0].rsplit("-", 1)[1]) >= SHIFT_AT, ids
    assert [a["alert_id"] for a in alerts] == ids and alerts[0]["detector"] == "adwin"

    async with channel(stack.grpc("drift")) as ch:
        stub = drift_pb2_grpc.DriftServiceStub(ch)
        got = await stub.GetDrift(drift_pb2.DriftReportRequest(model=model, version="1"))
        assert got.predictions == N and got.prediction_drift
        listed = await stub.ListAlerts(drift_pb2.ListAlertsRequest())
        assert ids[0] in {a.alert_id for a in listed.alerts}
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetDrift(drift_pb2.DriftReportRequest(model=model, version="9"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
