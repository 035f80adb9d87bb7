"""The monitor's flow with in-memory stores and producer: counting once, one alert per shift, rebuilding,
concept drift on the loss, and the report."""

from __future__ import annotations

import json
import random

import pytest

from mlops.errors import NotFound, PoisonRecord
from mlops.v1 import drift_pb2, events_pb2
from services.drift.core import EVIDENCE_HEADER, DriftMonitor
from services.drift.report import Report, alert_id, error_indicator, example_loss, positive_score
from services.drift.settings import DriftSettings
from tests.unit.drift.fakes import FakeProducer, MemoryStore

T0 = 1_700_000_000.0


def _monitor(store: MemoryStore | None = None, **settings: object) -> tuple[DriftMonitor, MemoryStore, FakeProducer]:
    store, producer = store or MemoryStore(), FakeProducer()
    monitor = DriftMonitor(store, producer, DriftSettings(**settings), clock=lambda: T0)  # type: ignore[arg-type]
    return monitor, store, producer


def _predictions(n: int, shift_at: int, seed: int = 3) -> list[events_pb2.Prediction]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = min(max(rng.gauss(0.2 if i < shift_at else 0.7, 0.05), 0.0), 1.0)
        out.append(events_pb2.Prediction(prediction_id=f"p{i}", model="m", version="1", outputs=[1 - p, p]))
    return out


def _alerts(producer: FakeProducer) -> list[events_pb2.DriftAlert]:
    return producer.on("drift.alerts")


async def test_counts_once_and_alerts_once_on_a_shift() -> None:
    monitor, _, producer = _monitor()
    preds = _predictions(1500, shift_at=1000)
    for i, p in enumerate(preds):
        await monitor.on_prediction(p, f"e{i}")
    for i, p in enumerate(preds[:50]):  # redelivered
        await monitor.on_prediction(p, f"e{i}")
    report = await monitor.report("m", "1")
    assert report.predictions == 1500
    assert report.prediction_mean == pytest.approx((1000 * 0.2 + 500 * 0.7) / 1500, abs=0.01)
    assert report.to_proto().prediction_drift is True
    assert len(producer.sent) == 1, "the detector fires after the shift; one shift, one alert"
    topic, alert, event_id, headers = producer.sent[0]
    assert isinstance(alert, events_pb2.DriftAlert)
    assert topic == "drift.alerts" and event_id == alert.alert_id and alert.kind == "prediction"
    assert alert.detector == "adwin" and alert.threshold == 0.002
    assert alert.score == pytest.approx(0.7, abs=0.05), "the level of the values since the change, not diluted"
    assert event_id.startswith("drift:prediction:m:1:e1")
    evidence = json.loads(headers[EVIDENCE_HEADER])
    assert evidence["check"] == "prediction" and evidence["baseline"] == pytest.approx(0.2, abs=0.02)
    assert evidence["effect"] > 0.05 and evidence["detector"]["type"] == "adwin"
    [(listed, stored_evidence)] = await monitor.alerts(model="m")
    assert listed == alert and stored_evidence == evidence
    assert await monitor.alerts(model="other") == [] and await monitor.alerts(kind="data") == []


async def test_a_rebuilt_detector_does_not_repeat_old_alerts() -> None:
    preds = _predictions(1500, shift_at=1000)
    first, store, producer = _monitor()
    for i, p in enumerate(preds):
        await first.on_prediction(p, f"e{i}")
    alerts_before = len(producer.sent)
    rebuilt, _, producer2 = _monitor(store)  # a restarted process sharing the same Redis state
    for i, p in enumerate(_predictions(200, shift_at=10_000, seed=4)):
        p.outputs[:] = [0.3, 0.7]
        await rebuilt.on_prediction(p, f"late{i}")
    assert alerts_before == 1 and producer2.sent == []


async def test_a_backlog_read_partition_by_partition_alerts_only_after_the_shift() -> None:
    # Keyed by prediction id, a version's stream is spread over partitions, and a consumer catching up
    # reads one partition's whole backlog before the next: a detector per partition keeps each in order.
    monitor, _, producer = _monitor(alert_cooldown_s=0)
    preds = _predictions(4000, shift_at=2000)
    for part in range(4):
        for i, p in enumerate(preds):
            if i % 4 == part:
                await monitor.on_prediction(p, f"e{i}", partition=part)
    fired_at = [int(a.alert_id.rsplit(":e", 1)[1]) for a in _alerts(producer)]
    assert len(fired_at) == 4 and min(fired_at) >= 2000, "one alert per partition without a cooldown"


async def test_cooldown_is_in_record_time_across_partitions() -> None:
    monitor, store, producer = _monitor(alert_cooldown_s=60)
    preds = _predictions(4000, shift_at=2000)
    for i, p in enumerate(preds):
        p.time.FromSeconds(int(T0) + i // 100)  # 100 predictions a second: the shift lands at +20 s
    for part in range(4):
        for i, p in enumerate(preds):
            if i % 4 == part:
                await monitor.on_prediction(p, f"e{i}", partition=part)
    assert len(producer.sent) == 1, "four partitions saw one shift: one alert"
    report = (await monitor.report("m", "1")).to_dict()
    assert report["prediction_alerts"] == 1 and report["prediction_suppressed"] == 3
    # A second shift two minutes later (record time) is a new alert, also after a restart.
    # (after the stream settled at 0.7: `settle` values without a firing)
    later = _predictions(1500, shift_at=1000, seed=9)
    for i, p in enumerate(later):
        p.outputs[:] = [1 - p.outputs[1] * 0.2, p.outputs[1] * 0.2] if i >= 1000 else [0.3, 0.7]
        p.time.FromSeconds(int(T0) + 200 + i // 100)
    restarted, _, producer2 = _monitor(store, alert_cooldown_s=60)
    for i, p in enumerate(later):
        await restarted.on_prediction(p, f"later{i}", partition=0)
    assert len(producer2.sent) == 1 and producer2.sent[0][1].time.seconds >= T0 + 210


@pytest.mark.parametrize("loss", ["log_loss", "zero_one"])
async def test_labels_feed_accuracy_and_concept_drift(loss: str) -> None:
    monitor, _, producer = _monitor(concept_loss=loss)
    rng = random.Random(1)
    for i in range(2000):
        wrong = rng.random() < (0.1 if i < 1000 else 0.6)
        label = events_pb2.Label(
            prediction_id=f"p{i}", model="m", version="1", outputs=[0.2, 0.8], label=0 if wrong else 1
        )
        await monitor.on_label(label, f"label:p{i}")
    report = (await monitor.report("m", "1")).to_dict()
    assert report["labels"] == 2000 and report["predictions"] == 0 and report["concept_loss"] == loss
    assert report["accuracy"] == pytest.approx(0.65, abs=0.03)
    assert report["recent"]["labels"] == 500 and report["recent"]["accuracy"] == pytest.approx(0.4, abs=0.07)
    assert report["concept_drift"] is True and report["concept_alerts"] == 1
    [alert] = _alerts(producer)
    assert alert.kind == "concept" and alert.feature == "loss"
    assert int(alert.alert_id.rsplit(":p", 1)[1]) >= 1000
    assert json.loads(producer.sent[0][3][EVIDENCE_HEADER])["statistic"].endswith(f"({loss})")


async def test_a_falling_loss_is_no_concept_drift() -> None:
    monitor, _, producer = _monitor()
    rng = random.Random(2)
    for i in range(2000):
        wrong = rng.random() < (0.5 if i < 1000 else 0.05)  # the model got better
        await monitor.on_label(events_pb2.Label(prediction_id=f"p{i}", model="m", version="1", outputs=[0.2, 0.8],
                                                label=0 if wrong else 1), f"l{i}")
    assert producer.sent == []


async def test_bad_records_and_unknown_versions() -> None:
    monitor, _, _ = _monitor()
    with pytest.raises(PoisonRecord):
        await monitor.on_prediction(events_pb2.Prediction(prediction_id="x"), "e")
    with pytest.raises(PoisonRecord):
        await monitor.on_label(events_pb2.Label(prediction_id="x"), "e")
    with pytest.raises(NotFound):
        await monitor.report("m", "9")
    await monitor.on_prediction(events_pb2.Prediction(prediction_id="x", model="m", version="9"), "e")
    report = await monitor.report("m", "9")
    assert report.predictions == 1 and report.prediction_mean == 0.0
    assert report.to_dict()["reference"] == {"status": "not_checked"}


def test_pure_helpers() -> None:
    assert positive_score([0.1, 0.9]) == 0.9 and positive_score([]) is None and positive_score([float("nan")]) is None
    assert error_indicator([0.8, 0.2], 0) == 0.0 and error_indicator([0.8, 0.2], 1) == 1.0
    assert error_indicator([0.7], 1) == 0.0 and error_indicator([], 1) is None
    assert example_loss([0.8, 0.2], 0) == pytest.approx(0.2231, abs=1e-4)
    assert example_loss([0.7], 0) == pytest.approx(1.2040, abs=1e-4)
    assert example_loss([1.0, 0.0], 1) == pytest.approx(6.9078, abs=1e-4), "P(label) is clipped at 1e-3"
    assert example_loss([0.5, 0.5], 3) == pytest.approx(6.9078, abs=1e-4)
    assert example_loss([0.5, 0.5], 0.5) is None and example_loss([], 1) is None
    assert example_loss([0.8, 0.2], 1, "zero_one") == 1.0
    assert alert_id("prediction", "m", "1", "e5") == alert_id("prediction", "m", "1", "e5")
    r = Report.build("m", "1", {"predictions": "4", "scored": "4", "score_sum": "2", "prediction_alerts": "1",
                                "prediction_alert_at": "1700000000"}, "adwin")
    d = r.to_dict()
    assert r.prediction_mean == 0.5 and d["prediction_alert_at"].startswith("2023-11-14")
    assert d["prediction_drift"] is True and d["data_drift"] is False and d["drifting"]["prediction"] is False
    proto = r.to_proto()
    assert isinstance(proto, drift_pb2.DriftReport) and json.loads(proto.details_json) == json.loads(json.dumps(d))
