"""Prometheus metrics of the drift service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ALERTS = Counter("mlops_drift_alerts_total", "Drift alerts raised.", ["model", "version", "kind", "detector"])
ALERTS_SUPPRESSED = Counter(
    "mlops_drift_alerts_suppressed_total", "Alerts not raised because one of the kind was within the cooldown.",
    ["model", "version", "kind"],
)
PREDICTION_MEAN = Gauge(
    "mlops_drift_prediction_mean", "Running mean of the positive-class score.", ["model", "version"]
)
DETECTOR_ESTIMATE = Gauge(
    "mlops_drift_detector_estimate", "The detector's current estimate of its stream.", ["model", "version", "kind"]
)
DETECTORS = Gauge("mlops_drift_detectors", "Detectors held in this process.")
FEATURE_PSI = Gauge(
    "mlops_drift_feature_psi", "PSI of a feature's window against the reference.", ["model", "version", "feature"]
)
TRAINING_REQUESTS = Counter(
    "mlops_drift_training_requests_total", "Retraining decisions by trigger and outcome (requested, cooldown).",
    ["model", "trigger", "outcome"],
)
