"""drift against the real stack (broker, redis-server, registry, feedback, drift as processes):

- a shift in a version's positive-class score raises one alert, after the shift; counts survive
  redelivery; REST and gRPC report the same state;
- a shift in one feature, against the reference distributions stored with the version in the registry,
  raises one data alert with its evidence, and the retraining policy turns it into one training request;
- the loop's part that drift and feedback own: predictions served, outcomes through the feedback API,
  the label function changes -> labels -> concept alert -> training request (stage candidate, recent
  rows, empty lineage), recorded with its reason; the version has no reference, which is handled.
"""

from __future__ import annotations

import asyncio
import json
import platform
import random
import subprocess
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from mlops.bench import drift_streams as ds
from mlops.bus import topics
from mlops.bus.producer import Producer
from mlops.grpc_util import channel
from mlops.settings import PlatformSettings
from mlops.v1 import (
    drift_pb2,
    drift_pb2_grpc,
    events_pb2,
    feedback_pb2,
    feedback_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from tests.integration.kafka_util import header, read_until
from tests.integration.stack import Stack
from tests.integration.toy_model import torchscript_bytes

pytestmark = pytest.mark.integration

SHIFT_AT, N = 1000, 1600


def register(grpc_address: str, model: str, features: list[str], *, stage: str = "production",
             reference: dict[str, Any] | None = None) -> registry_pb2.ModelVersion:
    """A toy TorchScript version with a complete run record and, when given, its reference distributions."""
    root = Path(__file__).resolve().parents[2]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    run = registry_pb2.RunInfo(
        experiment=f"{model}-tests", params={"kind": "toy"}, metrics={"accuracy": 1.0}, seed=0,
        dataset_id="ds-toy-fixture", git_commit=commit or "0" * 40, git_dirty=False,
        python_version=platform.python_version(), hardware="cpu", pip_freeze="torch==2.13.0",
        tags={"mlops.definitions_hash": "toy"},
    )
    with grpc.insecure_channel(grpc_address) as ch:
        return registry_pb2_grpc.RegistryServiceStub(ch).RegisterModelVersion(
            registry_pb2.RegisterModelVersionRequest(
                model=model, run=run, artifact=torchscript_bytes(len(features)), artifact_format="torchscript",
                signature=registry_pb2.ModelSignature(features=features, input_name="input", output_name="output",
                                                      classes=["0", "1"]),
                stage=stage, reason="registered by a drift test",
                reference=json.dumps(reference).encode() if reference is not None else b"",
            ), timeout=30)


async def records_for(stack: Stack, topic: str, prefix: str, *, at_least: int = 1, timeout_s: float = 90.0
                      ) -> list[Any]:
    """Records of ``topic`` whose event_id starts with ``prefix``, once ``at_least`` are there (or timeout)."""

    def mine(recs: list[Any]) -> list[Any]:
        return [r for r in recs if (header(r, "event_id") or "").startswith(prefix)]

    return mine(await read_until(stack.kafka, topic, lambda recs: len(mine(recs)) >= at_least, timeout_s=timeout_s))


async def _produce(items: list[tuple[str, events_pb2.Prediction, str]]) -> None:
    producer = Producer(PlatformSettings(), client_id="test-drift")
    await producer.start()
    try:
        for start in range(0, len(items), 500):
            await producer.send_many(topics.PREDICTIONS, items[start:start + 500])
    finally:
        await producer.stop()


async def test_a_score_shift_raises_one_alert_after_it(stack: Stack) -> None:
    model = f"dr{uuid.uuid4().hex[:8]}"
    rng = random.Random(5)
    items = []
    for i in range(N):
        p = min(max(rng.gauss(0.2 if i < SHIFT_AT else 0.7, 0.05), 0.0), 1.0)
        pid = f"{model}-{i}"
        items.append((pid, events_pb2.Prediction(prediction_id=pid, model=model, version="1", outputs=[1 - p, p]),
                      f"prediction:{pid}"))
    await _produce(items + items[:200])  # the first 200 redelivered

    prefix = f"drift:prediction:{model}:1:"
    await records_for(stack, topics.DRIFT_ALERTS, prefix)
    async with httpx.AsyncClient(timeout=30) as http:
        report = await drift_report(http, stack, model, "1", "predictions", N)
        assert report["predictions"] == N and report["prediction_drift"] is True
        assert report["prediction_mean"] == pytest.approx((SHIFT_AT * 0.2 + (N - SHIFT_AT) * 0.7) / N, abs=0.01)
        assert report["reference"]["status"] == "missing", "never registered: monitored without a reference"
        alerts = (await http.get(stack.url("drift", "/v1/alerts"), params={"model": model})).json()["alerts"]
        assert (await http.get(stack.url("drift", f"/v1/drift/{model}/9"))).status_code == 404
    records = await records_for(stack, topics.DRIFT_ALERTS, prefix, at_least=2, timeout_s=3)
    ids = [header(x, "event_id") for x in records]
    assert len(ids) == 1 and int(ids[0].rsplit("-", 1)[1]) >= SHIFT_AT, ids  # type: ignore[union-attr]
    assert [a["alert_id"] for a in alerts] == ids and alerts[0]["detector"] == "adwin"
    evidence = alerts[0]["evidence"]
    # The baseline also holds the values the detector saw before it fired (its delay).
    assert evidence["baseline"] < 0.3 and evidence["effect"] >= 0.05 and evidence["check"] == "prediction"
    assert json.loads(header(records[0], "mlops-evidence") or "{}") == evidence

    async with channel(stack.grpc("drift")) as ch:
        stub = drift_pb2_grpc.DriftServiceStub(ch)
        got = await stub.GetDrift(drift_pb2.DriftReportRequest(model=model, version="1"))
        assert got.predictions == N and got.prediction_drift
        assert json.loads(got.details_json)["prediction_alerts"] == 1
        listed = await stub.ListAlerts(drift_pb2.ListAlertsRequest(model=model))
        assert [a.alert_id for a in listed.alerts] == ids
        assert (await stub.ListAlerts(drift_pb2.ListAlertsRequest(model=model, version="2"))).alerts == []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetDrift(drift_pb2.DriftReportRequest(model=model, version="9"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _scores(rows: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-rows[:, 1]))


async def test_a_feature_shift_against_the_registry_reference_asks_for_a_candidate(stack: Stack) -> None:
    model = f"dd{uuid.uuid4().hex[:8]}"
    names = ds.feature_names(5)
    train = ds.feature_rows(3000, n_features=5, seed=1)
    version = await asyncio.to_thread(register, stack.grpc("registry"), model, names,
                                      reference=ds.reference_for(train, _scores(train)))
    live = ds.feature_rows(2000, n_features=5, change_at=1000, shifted=(3,), shift=1.0, seed=2)
    items = []
    for i, (row, score) in enumerate(zip(live, _scores(live), strict=True)):
        pid = f"{model}-{i}"
        p = events_pb2.Prediction(prediction_id=pid, model=model, version=version.version, outputs=[1 - score, score],
                                  features=dict(zip(names, map(float, row), strict=True)))
        p.time.GetCurrentTime()
        # Keyed as the router keys them (model:version): one partition, so the window sees them in order.
        items.append((f"{model}:{version.version}", p, f"prediction:{pid}"))
    await _produce(items)

    [alert_record] = await records_for(stack, topics.DRIFT_ALERTS, f"drift:data:{model}:")
    alert = events_pb2.DriftAlert.FromString(alert_record.value)
    assert alert.feature == "f03" and alert.detector == "psi+ks" and alert.score >= 0.2
    assert int(alert.alert_id.rsplit("-", 1)[1]) >= 1000, "not before the shift"
    evidence = json.loads(header(alert_record, "mlops-evidence") or "{}")
    assert evidence["reference"]["rows"] == 3000 and evidence["features"]["f03"]["p_adjusted"] < 0.01

    requests = await records_for(stack, topics.TRAINING_REQUESTS, f"retrain:{model}:")
    req = events_pb2.TrainingRequest.FromString(requests[0].value)
    assert req.model == model and req.stage == "candidate" and req.recent_rows == 2000
    assert (req.stream, list(req.features), req.label) == ("", [], "")
    assert req.reason.startswith(f"drift: data drift on version {version.version} (production): f03")

    async with httpx.AsyncClient(timeout=30) as http:
        report = await drift_report(http, stack, model, version.version, "predictions", 2000)
        assert report["reference"]["status"] == "loaded" and report["reference"]["rows"] == 3000
        assert report["data_alerts"] == 1 and report["scores"]["data"]["features"]["f03"]["psi"] >= 0.2
        assert report["scores"]["data"]["features"]["f00"]["psi"] < 0.1
        retraining = (await http.get(stack.url("drift", "/v1/retraining"), params={"model": model})).json()
        assert [r["request_id"] for r in retraining["requests"]] == [req.request_id]
        assert retraining["requests"][0]["trigger"] == "drift" and retraining["requests"][0]["state"] == "sent"
    more = await records_for(stack, topics.DRIFT_ALERTS, f"drift:data:{model}:", at_least=2, timeout_s=3)
    assert len(more) == 1, "one shift, one alert"


async def drift_report(http: httpx.AsyncClient, stack: Stack, model: str, version: str, count: str, at_least: int,
                       timeout_s: float = 60.0) -> dict[str, Any]:
    """The version's drift report once its ``count`` (predictions, labels) reaches ``at_least``; after
    ``timeout_s`` the last one read, for the caller's assertions to show."""
    report: dict[str, Any] = {}
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        r = await http.get(stack.url("drift", f"/v1/drift/{model}/{version}"))
        report = r.json() if r.status_code == 200 else {}
        if report.get(count, 0) >= at_least:
            break
        await asyncio.sleep(0.1)
    return report


async def test_concept_drift_in_outcomes_closes_its_part_of_the_loop(stack: Stack) -> None:
    """Predictions -> outcomes via the feedback API -> labels -> concept alert -> training request."""
    model = f"dl{uuid.uuid4().hex[:8]}"
    version = (await asyncio.to_thread(register, stack.grpc("registry"), model, ["x"])).version
    n, change = 1400, 700
    rng = random.Random(11)
    preds, outcomes = [], []
    for i in range(n):
        p = rng.choice([0.1, 0.2, 0.8, 0.9])
        pid = f"{model}-{i:05d}"
        prediction = events_pb2.Prediction(prediction_id=pid, endpoint="ep", variant="a", model=model,
                                           version=version, features={"x": p}, outputs=[1 - p, p])
        prediction.time.GetCurrentTime()
        # Keyed as the router keys them (model:version): one partition, so feedback joins them in order
        # (keyed by id, a lagging partition let an early outcome join after later ones under load).
        preds.append((f"{model}:{version}", prediction, f"prediction:{pid}"))
        agree = rng.random() < (0.92 if i < change else 0.35)  # the label function changes at `change`
        predicted = 1 if p >= 0.5 else 0
        outcomes.append({"prediction_id": pid, "label": predicted if agree else 1 - predicted})
    await _produce(preds)
    async with httpx.AsyncClient(timeout=30) as http:
        for start in range(0, n, 100):
            r = await http.post(stack.url("feedback", "/v1/feedback"), json=outcomes[start:start + 100])
            assert r.status_code == 202, r.text
            # Outcomes arrive over time, as in production: the next batch only once drift has this one's
            # labels. Outcomes are keyed by prediction id over several partitions, so sent all at once a
            # lagging partition's pre-change labels can reach the detector after post-change ones (CI saw
            # an alert on label 625), and where the alert lands would then say nothing about the detector.
            sent = min(start + 100, n)
            counted = (await drift_report(http, stack, model, version, "labels", sent)).get("labels", 0)
            assert counted >= sent, f"drift counted {counted} of the first {sent} labels"

        [alert_record] = await records_for(stack, topics.DRIFT_ALERTS, f"drift:concept:{model}:")
        alert = events_pb2.DriftAlert.FromString(alert_record.value)
        at = int(alert.alert_id.rsplit("-", 1)[1])
        assert change <= at <= change + 300, f"alerted at {at}, the change was at {change}"
        requests = await records_for(stack, topics.TRAINING_REQUESTS, f"retrain:{model}:")
        req = events_pb2.TrainingRequest.FromString(requests[0].value)
        assert (req.stage, req.recent_rows, req.stream, req.label) == ("candidate", 2000, "", "")
        assert req.reason.startswith(f"drift: concept drift on version {version} (production)")

        report = await drift_report(http, stack, model, version, "labels", n)
        assert report["labels"] == n and report["concept_alerts"] == 1
        assert report["reference"]["status"] == "missing" and report["data_alerts"] == 0
        assert report["recent"]["accuracy"] == pytest.approx(0.35, abs=0.08)
        retraining = (await http.get(stack.url("drift", "/v1/retraining"), params={"model": model})).json()
        assert [d["outcome"] for d in retraining["decisions"]][-1] == "requested"
        assert retraining["requests"][0]["reason"] == req.reason

    async with channel(stack.grpc("feedback")) as ch:
        quality = await feedback_pb2_grpc.FeedbackServiceStub(ch).GetQuality(
            feedback_pb2.QualityRequest(model=model, version=version))
    assert quality.outcomes == n
    assert quality.accuracy == pytest.approx((0.92 * change + 0.35 * (n - change)) / n, abs=0.05)
    assert 0.0 < quality.calibration_error < 1.0 and quality.log_loss > 0
    more = await records_for(stack, topics.TRAINING_REQUESTS, f"retrain:{model}:", at_least=2, timeout_s=3)
    assert len(more) == 1, "once per cooldown"
