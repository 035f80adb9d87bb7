"""The monitor's flow with an in-memory store and producer: counting once, alerting once, rebuilding."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from mlops.errors import NotFound, PoisonRecord
from mlops.v1 import events_pb2
from services.drift.core import DriftMonitor
from services.drift.report import Report, alert_id, error_indicator, positive_score
from services.drift.settings import DriftSettings
from services.drift.store import Stream


@dataclass
class MemoryStore:
    """What DriftStore's scripts do, in a dict (the scripts themselves are exercised against Redis)."""

    window: int = 2000
    max_alerts: int = 1000
    done: set[tuple[str, str]] = field(default_factory=set)
    hashes: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    windows: dict[tuple[str, str, str, int], list[float]] = field(default_factory=dict)
    stored_alerts: list[bytes] = field(default_factory=list)
    alert_ids: set[str] = field(default_factory=set)

    async def seen(self, stream: Stream, event_id: str) -> bool:
        return (stream.topic, event_id) in self.done

    async def record(
        self, stream: Stream, event_id: str, model: str, version: str, partition: int, value: float | None, now: float
    ) -> tuple[int, float] | None:
        if (stream.topic, event_id) in self.done:
            return None
        self.done.add((stream.topic, event_id))
        h = self.hashes.setdefault((model, version), {})
        h[stream.count_field] = h.get(stream.count_field, 0) + 1
        if value is not None:
            h[stream.n_field] = h.get(stream.n_field, 0) + 1
            h[stream.sum_field] = h.get(stream.sum_field, 0) + value
            w = self.windows.setdefault((stream.name, model, version, partition), [])
            w.append(value)
            del w[: -self.window]
        return int(h.get(stream.n_field, 0)), h.get(stream.sum_field, 0.0)

    async def recent(self, stream: Stream, model: str, version: str, partition: int) -> list[float]:
        return list(self.windows.get((stream.name, model, version, partition), []))

    async def add_alert(self, stream: Stream, aid: str, alert: bytes, model: str, version: str, now: float) -> bool:
        if aid in self.alert_ids:
            return False
        self.alert_ids.add(aid)
        self.stored_alerts.insert(0, alert)
        h = self.hashes.setdefault((model, version), {})
        h[f"{stream.name}_alerts"] = h.get(f"{stream.name}_alerts", 0) + 1
        h[f"{stream.name}_alert_at"] = now
        return True

    async def state(self, model: str, version: str) -> dict[str, str]:
        return {k: str(v) for k, v in self.hashes.get((model, version), {}).items()}

    async def alerts(self, limit: int) -> list[bytes]:
        return self.stored_alerts[:limit]


@dataclass
class FakeProducer:
    sent: list[tuple[str, events_pb2.DriftAlert, str]] = field(default_factory=list)

    async def send(self, topic: str, message: events_pb2.DriftAlert, *, key: str, event_id: str) -> str:
        self.sent.append((topic, message, event_id))
        return event_id


def _monitor(store: MemoryStore | None = None, **settings: object) -> tuple[DriftMonitor, MemoryStore, FakeProducer]:
    store, producer = store or MemoryStore(), FakeProducer()
    monitor = DriftMonitor(store, producer, DriftSettings(**settings), clock=lambda: 1_700_000_000.0)  # type: ignore[arg-type]
    return monitor, store, producer


def _predictions(n: int, shift_at: int, seed: int = 3) -> list[events_pb2.Prediction]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = min(max(rng.gauss(0.2 if i < shift_at else 0.7, 0.05), 0.0), 1.0)
        out.append(events_pb2.Prediction(prediction_id=f"p{i}", model="m", version="1", outputs=[1 - p, p]))
    return out


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
    assert len(producer.sent) == 1, "ADWIN fires after the shift; the cooldown keeps it to one alert"
    topic, alert, event_id = producer.sent[0]
    assert topic == "drift.alerts" and event_id == alert.alert_id and alert.kind == "prediction"
    assert alert.detector == "adwin" and alert.threshold == 0.002 and 0.2 < alert.score < 0.7
    assert event_id.startswith("drift:prediction:m:1:e1")
    assert len(await monitor.alerts(model="m")) == len(producer.sent)
    assert await monitor.alerts(model="other") == []


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
    assert alerts_before >= 1 and producer2.sent == []


async def test_a_backlog_read_partition_by_partition_alerts_only_after_the_shift() -> None:
    # Keyed by prediction id, a version's stream is spread over partitions, and a consumer catching up
    # reads one partition's whole backlog before the next: a detector per partition keeps each in order.
    monitor, _, producer = _monitor(alert_cooldown_s=0)
    preds = _predictions(4000, shift_at=2000)
    by_partition = [[(i, p) for i, p in enumerate(preds) if i % 4 == part] for part in range(4)]
    for part, items in enumerate(by_partition):
        for i, p in items:
            await monitor.on_prediction(p, f"e{i}", partition=part)
    fired_at = [int(a.alert_id.rsplit(":e", 1)[1]) for _, a, _ in producer.sent]
    assert fired_at and min(fired_at) >= 2000


async def test_cooldown_is_in_record_time_across_partitions() -> None:
    monitor, store, producer = _monitor(alert_cooldown_s=60)
    preds = _predictions(4000, shift_at=2000)
    for i, p in enumerate(preds):
        p.time.FromSeconds(1_700_000_000 + i // 100)  # 100 predictions a second: the shift lands at +20 s
    for part in range(4):
        for i, p in enumerate(preds):
            if i % 4 == part:
                await monitor.on_prediction(p, f"e{i}", partition=part)
    assert len(producer.sent) == 1, "four partitions saw one shift: one alert"
    # A second shift two minutes later (record time) is a new alert, also after a restart.
    later = _predictions(1000, shift_at=500, seed=9)
    for i, p in enumerate(later):
        p.outputs[:] = [1 - p.outputs[1] * 0.2, p.outputs[1] * 0.2] if i >= 500 else [0.3, 0.7]
        p.time.FromSeconds(1_700_000_200 + i // 100)
    restarted, _, producer2 = _monitor(store, alert_cooldown_s=60)
    for i, p in enumerate(later):
        await restarted.on_prediction(p, f"later{i}", partition=0)
    assert len(producer2.sent) >= 1 and producer2.sent[0][1].time.seconds >= 1_700_000_205


async def test_labels_feed_accuracy_and_concept_drift() -> None:
    monitor, _, producer = _monitor()
    rng = random.Random(1)
    for i in range(2000):
        wrong = rng.random() < (0.1 if i < 1000 else 0.6)
        label = events_pb2.Label(
            prediction_id=f"p{i}", model="m", version="1", outputs=[0.2, 0.8], label=0 if wrong else 1
        )
        await monitor.on_label(label, f"label:p{i}")
    report = (await monitor.report("m", "1")).to_dict()
    assert report["labels"] == 2000 and report["predictions"] == 0
    assert report["accuracy"] == pytest.approx(0.65, abs=0.03)
    assert report["concept_drift"] is True
    assert {a.kind for _, a, _ in producer.sent} == {"concept"}


async def test_bad_records_and_unknown_versions() -> None:
    monitor, _, _ = _monitor()
    with pytest.raises(PoisonRecord):
        await monitor.on_prediction(events_pb2.Prediction(prediction_id="x"), "e")
    with pytest.raises(NotFound):
        await monitor.report("m", "9")
    await monitor.on_prediction(events_pb2.Prediction(prediction_id="x", model="m", version="9"), "e")
    report = await monitor.report("m", "9")
    assert report.predictions == 1 and report.prediction_mean == 0.0


def test_pure_helpers() -> None:
    assert positive_score([0.1, 0.9]) == 0.9 and positive_score([]) is None and positive_score([float("nan")]) is None
    assert error_indicator([0.8, 0.2], 0) == 0.0 and error_indicator([0.8, 0.2], 1) == 1.0
    assert error_indicator([0.7], 1) == 0.0 and error_indicator([], 1) is None
    assert alert_id("prediction", "m", "1", "e5") == alert_id("prediction", "m", "1", "e5")
    r = Report.from_hash("m", "1", {"predictions": "4", "scored": "4", "score_sum": "2", "prediction_alerts": "1",
                                    "prediction_alert_at": "1700000000"}, "adwin")
    assert r.prediction_mean == 0.5 and r.to_dict()["prediction_alert_at"].startswith("2023-11-14")  # type: ignore[union-attr]
