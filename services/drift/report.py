"""Pure pieces of the drift service: the value each record contributes, alert construction, and the
report of one model version built from its Redis hash."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from mlops.v1 import drift_pb2, events_pb2


def positive_score(outputs: list[float]) -> float | None:
    """The positive-class score: the last output (class probabilities or a single score)."""
    if not outputs or not math.isfinite(outputs[-1]):
        return None
    return float(outputs[-1])


def error_indicator(outputs: list[float], label: float) -> float | None:
    """1.0 when the prediction's class is not the label, 0.0 when it is; None without outputs."""
    if not outputs or not math.isfinite(label):
        return None
    if len(outputs) == 1:
        predicted = 1 if outputs[0] >= 0.5 else 0
    else:
        predicted = max(range(len(outputs)), key=outputs.__getitem__)
    return 0.0 if predicted == int(label) else 1.0


def alert_id(kind: str, model: str, version: str, event_id: str) -> str:
    """Deterministic: the same record firing the same detector always makes the same alert."""
    return f"drift:{kind}:{model}:{version}:{event_id}"


def build_alert(
    *,
    kind: str,
    model: str,
    version: str,
    event_id: str,
    feature: str,
    score: float,
    threshold: float,
    detector: str,
    time: Timestamp,
) -> events_pb2.DriftAlert:
    alert = events_pb2.DriftAlert(
        alert_id=alert_id(kind, model, version, event_id),
        model=model,
        version=version,
        kind=kind,
        feature=feature,
        score=score,
        threshold=threshold,
        detector=detector,
    )
    alert.time.CopyFrom(time)
    return alert


def alert_to_dict(alert: events_pb2.DriftAlert) -> dict[str, object]:
    return {
        "alert_id": alert.alert_id,
        "model": alert.model,
        "version": alert.version,
        "kind": alert.kind,
        "feature": alert.feature,
        "score": alert.score,
        "threshold": alert.threshold,
        "detector": alert.detector,
        "time": alert.time.ToDatetime(tzinfo=UTC).isoformat() if alert.HasField("time") else None,
    }


def _iso(epoch: str | None) -> str | None:
    return datetime.fromtimestamp(float(epoch), UTC).isoformat() if epoch else None


@dataclass(frozen=True, slots=True)
class Report:
    """Drift state of one model version, from the hash kept by :class:`services.drift.store.DriftStore`."""

    model: str
    version: str
    predictions: int
    scored: int
    score_sum: float
    labels: int
    labels_scored: int
    error_sum: float
    prediction_alerts: int
    concept_alerts: int
    prediction_alert_at: str | None
    concept_alert_at: str | None
    last_seen: str | None
    detector: str

    @classmethod
    def from_hash(cls, model: str, version: str, h: dict[str, str], detector: str) -> Report:
        def num(name: str) -> float:
            return float(h.get(name) or 0)

        return cls(
            model=model,
            version=version,
            predictions=int(num("predictions")),
            scored=int(num("scored")),
            score_sum=num("score_sum"),
            labels=int(num("labels")),
            labels_scored=int(num("labels_scored")),
            error_sum=num("error_sum"),
            prediction_alerts=int(num("prediction_alerts")),
            concept_alerts=int(num("concept_alerts")),
            prediction_alert_at=_iso(h.get("prediction_alert_at")),
            concept_alert_at=_iso(h.get("concept_alert_at")),
            last_seen=_iso(h.get("last_seen")),
            detector=detector,
        )

    @property
    def prediction_mean(self) -> float:
        return self.score_sum / self.scored if self.scored else 0.0

    @property
    def accuracy(self) -> float | None:
        return 1.0 - self.error_sum / self.labels_scored if self.labels_scored else None

    def to_proto(self) -> drift_pb2.DriftReport:
        return drift_pb2.DriftReport(
            model=self.model,
            version=self.version,
            predictions=self.predictions,
            labels=self.labels,
            prediction_mean=self.prediction_mean,
            prediction_drift=self.prediction_alerts > 0,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "version": self.version,
            "predictions": self.predictions,
            "labels": self.labels,
            "prediction_mean": self.prediction_mean,
            "prediction_drift": self.prediction_alerts > 0,
            "prediction_alerts": self.prediction_alerts,
            "prediction_alert_at": self.prediction_alert_at,
            "accuracy": self.accuracy,
            "concept_drift": self.concept_alerts > 0,
            "concept_alerts": self.concept_alerts,
            "concept_alert_at": self.concept_alert_at,
            "last_seen": self.last_seen,
            "detector": self.detector,
        }
