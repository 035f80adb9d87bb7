"""Prometheus metrics of the drift service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ALERTS = Counter("mlops_drift_alerts_total", "Drift alerts raised.", ["model", "version", "kind", "detector"])
PREDICTION_MEAN = Gauge(
    "mlops_drift_prediction_mean", "Running mean of the positive-class score.", ["model", "version"]
)
DETECTOR_ESTIMATE = Gauge(
    "mlops_drift_detector_estimate", "The detector's current estimate of its stream.", ["model", "version", "kind"]
)
DETECTORS = Gauge("mlops_drift_detectors", "Detectors held in this process.")
