"""Prometheus metrics of the inference service: queue time, compute time and batch sizes per model version."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)

QUEUE_SECONDS = Histogram(
    "mlops_inference_queue_seconds",
    "Time a request waited in the dynamic batcher's queue before its batch started.",
    ["model", "version"],
    buckets=_SECONDS,
)
COMPUTE_SECONDS = Histogram(
    "mlops_inference_compute_seconds",
    "Forward-pass time of one batch (including host/device copies).",
    ["model", "version"],
    buckets=_SECONDS,
)
BATCH_ROWS = Histogram("mlops_inference_batch_rows", "Rows in one executed batch.", ["model", "version"], buckets=_ROWS)
BATCH_REQUESTS = Histogram(
    "mlops_inference_batch_requests",
    "Requests merged into one executed batch.",
    ["model", "version"],
    buckets=_ROWS,
)
INFER_REQUESTS = Counter(
    "mlops_inference_requests_total", "Inference requests by outcome.", ["model", "version", "outcome"]
)
LOADED = Gauge("mlops_inference_loaded_models", "Model versions loaded and serving.")
LOADS = Counter("mlops_inference_loads_total", "Model version loads by outcome.", ["outcome"])
