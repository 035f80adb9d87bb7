"""Pure pieces of the drift service: the value each record contributes, alert construction, and the
report of one model version built from its Redis hash."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from mlops.v1 import drift_pb2, events_pb2


def positive_score(outputs: list[float]) -> float | None:
    """The positive-class score: the last output (class probabilities or a single score)."""
    if not outputs or not math.isfinite(outputs[-1]):
        return None
    return float(outputs[-1])


#: P(label) is clipped here before the log, so that one confident miss cannot dominate a detector's window.
P_FLOOR = 1e-3


def example_loss(outputs: list[float], label: float, loss: str = "log_loss") -> float | None:
    """The per-example loss of a labelled prediction: log loss of P(label), or the 0/1 error."""
    if loss == "zero_one":
        return error_indicator(outputs, label)
    if not outputs or not math.isfinite(label) or label < 0 or label != int(label):
        return None
    k = int(label)
    if len(outputs) == 1 and k in (0, 1):
        p = outputs[0] if k == 1 else 1.0 - outputs[0]
    elif k < len(outputs):
        p = outputs[k]
    else:
        p = 0.0
    if not math.isfinite(p):
        return None
    return -math.log(min(max(p, P_FLOOR), 1.0 - P_FLOOR))


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


def alert_to_dict(alert: events_pb2.DriftAlert, evidence: dict[str, Any] | None = None) -> dict[str, object]:
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
        "evidence": evidence,
    }


def _iso(epoch: str | float | None) -> str | None:
    return datetime.fromtimestamp(float(epoch), UTC).isoformat() if epoch else None


KINDS = ("data", "prediction", "concept", "quality")


@dataclass(frozen=True, slots=True)
class Report:
    """Drift state of one model version: the hash kept by :class:`services.drift.store.DriftStore`, the
    recent labelled outcomes and the reference's status."""

    model: str
    version: str
    state: dict[str, str]
    detector: str
    outcomes: list[tuple[float, float]]
    reference: dict[str, Any]
    concept_loss: str = "log_loss"

    @classmethod
    def build(
        cls,
        model: str,
        version: str,
        state: dict[str, str],
        detector: str,
        outcomes: list[tuple[float, float]] | None = None,
        reference: dict[str, Any] | None = None,
        concept_loss: str = "log_loss",
    ) -> Report:
        return cls(model, version, state, detector, outcomes or [], reference or {"status": "not_checked"},
                   concept_loss)

    def num(self, name: str) -> float:
        return float(self.state.get(name) or 0)

    @property
    def predictions(self) -> int:
        return int(self.num("predictions"))

    @property
    def labels(self) -> int:
        return int(self.num("labels"))

    @property
    def prediction_mean(self) -> float:
        scored = self.num("scored")
        return self.num("score_sum") / scored if scored else 0.0

    @property
    def accuracy(self) -> float | None:
        n = self.num("labels_scored")
        return 1.0 - self.num("error_sum") / n if n else None

    def _json(self, name: str) -> Any:
        raw = self.state.get(name)
        return json.loads(raw) if raw else None

    def _sequential(self, kind: str) -> dict[str, Any]:
        prefix = f"seq:{kind}:"
        return {k[len(prefix):]: json.loads(v) for k, v in sorted(self.state.items()) if k.startswith(prefix)}

    def drifting(self) -> dict[str, bool]:
        def seq(kind: str) -> bool:
            return any(s.get("drifting") for s in self._sequential(kind).values())

        def window(check: str) -> bool:
            return bool((self._json(f"state:{check}") or {}).get("drifting"))

        return {
            "data": window("data"),
            "prediction": seq("prediction") or window("prediction_window"),
            "concept": seq("concept"),
            "quality": window("quality"),
        }

    def window_quality(self) -> dict[str, Any]:
        n = len(self.outcomes)
        return {
            "labels": n,
            "accuracy": sum(c for c, _ in self.outcomes) / n if n else None,
            "log_loss": sum(loss for _, loss in self.outcomes) / n if n else None,
        }

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "version": self.version,
            "predictions": self.predictions,
            "labels": self.labels,
            "prediction_mean": self.prediction_mean,
            "accuracy": self.accuracy,
            "recent": self.window_quality(),
            "detector": self.detector,
            "concept_loss": self.concept_loss,
            "last_seen": _iso(self.state.get("last_seen")),
            "reference": self.reference,
            "drifting": self.drifting(),
        }
        for kind in KINDS:
            out[f"{kind}_drift"] = self.num(f"{kind}_alerts") > 0
            out[f"{kind}_alerts"] = int(self.num(f"{kind}_alerts"))
            out[f"{kind}_alert_at"] = _iso(self.state.get(f"{kind}_alert_at"))
            out[f"{kind}_suppressed"] = int(self.num(f"{kind}_suppressed"))
        out["scores"] = {
            "data": self._json("scores:data"),
            "prediction": {"partitions": self._sequential("prediction"),
                           "window": self._json("state:prediction_window")},
            "concept": {"partitions": self._sequential("concept")},
            "states": {check: self._json(f"state:{check}") for check in ("data", "prediction_window", "quality")},
        }
        return out

    def to_proto(self) -> drift_pb2.DriftReport:
        return drift_pb2.DriftReport(
            model=self.model,
            version=self.version,
            predictions=self.predictions,
            labels=self.labels,
            prediction_mean=self.prediction_mean,
            prediction_drift=self.num("prediction_alerts") > 0,
            details_json=json.dumps(self.to_dict(), default=float),
        )
