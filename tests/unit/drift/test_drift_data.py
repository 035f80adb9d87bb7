"""Window checks through the monitor: data drift per feature against the reference (one alert per
episode, naming the features), prediction drift against the training scores, data quality, dead
letters, and versions without a reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlops.bench import drift_streams as ds
from mlops.bus.envelope import Envelope
from mlops.v1 import events_pb2
from services.drift.core import DriftMonitor
from services.drift.references import ReferenceCache
from services.drift.settings import DriftSettings
from tests.unit.drift.fakes import FakeProducer, MemoryStore

T0 = 1_700_000_000.0
NAMES = ds.feature_names(20)


class Registry:
    """A fake ``GetReference``: bytes, None (no reference) or an error (registry down)."""

    def __init__(self, doc: dict | None = None, error: Exception | None = None) -> None:
        self.doc, self.error, self.calls = doc, error, 0

    async def __call__(self, model: str, version: str) -> bytes | None:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return json.dumps(self.doc).encode() if self.doc is not None else None


def _monitor(registry: Registry, clock: list[float] | None = None, **settings: object
             ) -> tuple[DriftMonitor, MemoryStore, FakeProducer]:
    now = clock or [T0]
    store, producer = MemoryStore(), FakeProducer()
    refs = ReferenceCache(registry, retry_s=30, clock=lambda: now[0])
    return DriftMonitor(store, producer, DriftSettings(**settings), refs, clock=lambda: now[0]), store, producer  # type: ignore[arg-type]


def _prediction(i: int, row: np.ndarray, score: float, names: list[str] = NAMES) -> events_pb2.Prediction:
    p = events_pb2.Prediction(prediction_id=f"p{i}", model="m", version="1", outputs=[1 - score, score],
                              features={n: float(v) for n, v in zip(names, row, strict=True)})
    p.time.FromNanoseconds(int((T0 + i / 100) * 1e9))
    return p


def _scores(rows: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-rows[:, 1]))


async def _feed(monitor: DriftMonitor, rows: np.ndarray, scores: np.ndarray, start: int = 0) -> None:
    for i, (row, s) in enumerate(zip(rows, scores, strict=True), start):
        await monitor.on_prediction(_prediction(i, row, float(s)), f"e{i}")


def _reference(seed: int = 1) -> dict:
    train = ds.feature_rows(5000, seed=seed)
    return ds.reference_for(train, _scores(train))


async def test_one_feature_shift_gives_one_data_alert_naming_it() -> None:
    monitor, _, producer = _monitor(Registry(_reference()))
    rows = ds.feature_rows(6000, change_at=3000, shifted=(3,), shift=0.8, seed=2)
    await _feed(monitor, rows, _scores(rows))
    data = [a for a in producer.on("drift.alerts") if a.kind == "data"]
    assert len(data) == 1, [a.feature for a in data]
    alert = data[0]
    assert alert.feature == "f03" and alert.detector == "psi+ks" and alert.score >= 0.2
    at = int(alert.alert_id.rsplit(":e", 1)[1])
    assert 3000 < at <= 3000 + 300, "detected within 300 predictions of the shift"
    [(_, evidence)] = await monitor.alerts(kind="data")
    f = evidence["features"]["f03"]
    assert f["test"] == "ks" and f["p_adjusted"] < 0.01 and f["psi"] >= 0.2
    assert evidence["window"]["size"] == 500 and evidence["reference"]["rows"] == 5000
    assert evidence["correction"] == "bh"
    assert [a.kind for a in producer.on("drift.alerts")] == ["data"], "the score did not move: no other alert"
    report = (await monitor.report("m", "1")).to_dict()
    assert report["data_drift"] and report["drifting"]["data"]
    assert report["scores"]["data"]["features"]["f03"]["psi"] >= 0.2
    assert report["scores"]["data"]["features"]["f00"]["psi"] < 0.1
    assert report["reference"]["status"] == "loaded" and len(report["reference"]["features"]) == 20


async def test_a_stationary_stream_gives_no_window_alert() -> None:
    monitor, _, producer = _monitor(Registry(_reference()))
    rows = ds.feature_rows(20_000, seed=3)
    await _feed(monitor, rows, _scores(rows))
    assert producer.on("drift.alerts") == [], "about 200 evaluations of 20 features: no false alarm"


async def test_an_episode_ends_after_calm_evaluations_and_a_new_shift_alerts_again() -> None:
    monitor, _, producer = _monitor(Registry(_reference()), alert_cooldown_s=0)
    rows = ds.feature_rows(9000, seed=4)
    rows[2000:4000, 5] += 1.0  # a shift that goes away, then another in another feature
    rows[7000:, 9] -= 1.0
    await _feed(monitor, rows, _scores(rows))
    data = [a.feature for a in producer.on("drift.alerts") if a.kind == "data"]
    assert data == ["f05", "f09"]


@pytest.mark.parametrize(("settings", "feature"), [
    ({}, "score"),  # the streaming detector on the score is quicker; the window check is then cooled down
    ({"prediction": {"min_effect": 1.0}}, "prediction"),  # the window check against the training scores alone
])
async def test_a_score_shift_is_one_prediction_alert(settings: dict, feature: str) -> None:
    monitor, _, producer = _monitor(Registry(_reference()), **settings)
    rows = ds.feature_rows(4000, seed=5)
    scores = _scores(rows)
    scores[2000:] = np.clip(scores[2000:] + 0.25, 0, 1)
    await _feed(monitor, rows, scores)
    [alert] = producer.on("drift.alerts")
    assert (alert.kind, alert.feature) == ("prediction", feature)
    assert int(alert.alert_id.rsplit(":e", 1)[1]) > 2000
    if feature == "prediction":
        [(_, evidence)] = await monitor.alerts()
        assert evidence["features"]["prediction"]["test"] == "ks" and alert.detector == "psi+ks"
    else:
        assert (await monitor.report("m", "1")).to_dict()["prediction_suppressed"] == 1


async def test_missing_and_out_of_range_values_are_a_quality_alert() -> None:
    monitor, _, producer = _monitor(Registry(_reference()))
    rows = ds.feature_rows(3000, seed=6)
    rows[1500:, 7] = np.where(np.arange(1500) % 5 == 0, np.nan, rows[1500:, 7])  # 20% missing
    await _feed(monitor, rows, _scores(rows))
    [alert] = [a for a in producer.on("drift.alerts") if a.kind == "quality"]
    assert alert.feature == "missing:f07" and alert.detector == "missing_rate" and alert.score > 0.05
    rows = ds.feature_rows(3000, seed=7)
    rows[1500:, 8] = 50.0  # far outside the training range
    monitor2, _, producer2 = _monitor(Registry(_reference()))
    await _feed(monitor2, rows, _scores(rows))
    quality = [a for a in producer2.on("drift.alerts") if a.kind == "quality"]
    assert [a.feature for a in quality] == ["out_of_range:f08"]


async def test_categorical_features_use_chi_squared() -> None:
    rng = np.random.default_rng(8)
    names = ["colour", "x"]
    train_colour = rng.choice([0, 1, 2], size=4000, p=[0.6, 0.3, 0.1])
    doc = {"rows": 4000, "features": {
        "colour": {"kind": "categorical", "counts": {str(k): int(v) for k, v in
                                                     zip(*np.unique(train_colour, return_counts=True), strict=True)}},
        "x": ds.reference_for(rng.normal(size=(4000, 1)))["features"]["f00"],
    }}
    monitor, _, producer = _monitor(Registry(doc))
    live = np.concatenate([rng.choice([0, 1, 2], size=1500, p=[0.6, 0.3, 0.1]),
                           rng.choice([0, 1, 2, 3], size=1500, p=[0.2, 0.3, 0.3, 0.2])])  # 3 never seen
    for i, c in enumerate(live):
        await monitor.on_prediction(_prediction(i, np.array([c, rng.normal()]), 0.5, names), f"e{i}")
    data = [a for a in producer.on("drift.alerts") if a.kind == "data"]
    assert len(data) == 1 and data[0].feature == "colour" and data[0].detector == "psi+chi2"
    quality = [a for a in producer.on("drift.alerts") if a.kind == "quality"]
    assert [a.feature for a in quality] == ["out_of_range:colour"], "unseen categories count as out of range"


@pytest.mark.parametrize(("registry", "status"), [
    (Registry(None), "missing"),
    (Registry(error=ConnectionError("registry down")), "unavailable"),
    (Registry({"features": {"x": {"kind": "weird"}}}), "invalid"),
])
async def test_no_reference_yet_is_monitored_without_window_checks(registry: Registry, status: str) -> None:
    clock = [T0]
    monitor, _, producer = _monitor(registry, clock)
    rows = ds.feature_rows(1000, change_at=500, shifted=(0,), shift=3.0, seed=9)
    await _feed(monitor, rows, _scores(rows))
    report = (await monitor.report("m", "1")).to_dict()
    assert report["predictions"] == 1000 and report["reference"]["status"] == status
    assert report["scores"]["data"] is None
    assert [a for a in producer.on("drift.alerts") if a.kind in ("data", "quality")] == []
    assert registry.calls == 1, "asked once per retry period, not per prediction"
    # The reference is stored later: picked up after the retry period.
    registry.doc, registry.error = _reference(), None
    clock[0] += 31
    more = ds.feature_rows(600, change_at=0, shifted=(0,), shift=3.0, seed=10)
    await _feed(monitor, more, _scores(more), start=1000)
    assert (await monitor.report("m", "1")).to_dict()["reference"]["status"] == "loaded"
    assert [a.feature for a in producer.on("drift.alerts") if a.kind == "data"] == ["f00"]


async def test_a_restarted_monitor_keeps_its_window_and_episode() -> None:
    registry = Registry(_reference())
    monitor, store, producer = _monitor(registry)
    rows = ds.feature_rows(4000, change_at=2000, shifted=(2,), shift=1.0, seed=11)
    await _feed(monitor, rows[:3000], _scores(rows[:3000]))
    assert [a.feature for a in producer.on("drift.alerts")] == ["f02"]
    restarted = DriftMonitor(store, producer, DriftSettings(alert_cooldown_s=0),
                             ReferenceCache(registry), clock=lambda: T0)  # type: ignore[arg-type]
    await _feed(restarted, rows[3000:], _scores(rows[3000:]), start=3000)
    assert [a.feature for a in producer.on("drift.alerts")] == ["f02"], "the episode goes on: no second alert"


async def test_dead_letter_rate_alerts_once_then_clears() -> None:
    clock = [T0]
    monitor, store, producer = _monitor(Registry(None), clock, dead_letters={"window_s": 60, "max_per_minute": 5})

    def dead(i: int, t: float) -> Envelope:
        return Envelope(topic="events.deadletter", value=b"x", headers={"event_id": f"d{i}",
                        "mlops-dlq-source-topic": "events.raw"}, timestamp_ms=int(t * 1000))

    for i in range(5):
        await monitor.on_dead_letter(dead(i, T0))
    await monitor.on_dead_letter(dead(0, T0))  # redelivered: counted once
    assert producer.sent == []
    for i in range(5, 12):
        await monitor.on_dead_letter(dead(i, T0 + 1))
    [alert] = producer.on("drift.alerts")
    assert alert.kind == "quality" and alert.feature == "dead_letter_rate:events.raw" and alert.score == 6.0
    assert (await monitor.dead_letter_rates(T0 + 1)) == {"events.raw": 12.0}
    await monitor.tick()
    assert await store.dead_letter_state() == {"events.raw"}, "still above half the threshold"
    clock[0] = T0 + 180
    await monitor.tick()
    assert await store.dead_letter_state() == set()
