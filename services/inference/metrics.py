"""Prometheus metrics of the inference service: queue time, compute time, batch sizes, requests in flight
and queue depth per model version, loads, refusals and the prediction log.

In-flight and queue depth are read from the live batchers when Prometheus scrapes (a custom collector),
so they cost nothing per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
REFUSED = Counter(
    "mlops_inference_refused_total", "Requests refused because the version's queue was full.", ["model", "version"]
)
LOADED = Gauge("mlops_inference_loaded_models", "Model versions loaded and serving.")
LOADS = Counter("mlops_inference_loads_total", "Model version loads by outcome.", ["outcome"])
PREDICTIONS_LOGGED = Counter(
    "mlops_inference_predictions_logged_total",
    "Prediction records (one per row) by outcome: published, dropped (log buffer full), failed (broker error).",
    ["outcome"],
)
PREDICTION_LOG_BUFFERED = Gauge(
    "mlops_inference_prediction_log_buffered", "Prediction records waiting to be published."
)


class _Batcher(Protocol):
    labels: tuple[str, str]
    queued_rows: int

    @property
    def in_flight(self) -> int: ...


class BatcherGauges(Collector):
    """``mlops_inference_requests_in_flight`` and ``mlops_inference_queue_rows`` per model version."""

    def __init__(self, batchers: Callable[[], Iterable[_Batcher]]) -> None:
        self._batchers = batchers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_flight = GaugeMetricFamily(
            "mlops_inference_requests_in_flight", "Requests queued or in a forward pass.", labels=["model", "version"]
        )
        queued = GaugeMetricFamily(
            "mlops_inference_queue_rows", "Rows waiting in the batcher's queue.", labels=["model", "version"]
        )
        for batcher in list(self._batchers()):
            in_flight.add_metric(list(batcher.labels), batcher.in_flight)
            queued.add_metric(list(batcher.labels), batcher.queued_rows)
        yield in_flight
        yield queued

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


def register_batcher_gauges(batchers: Callable[[], Iterable[_Batcher]]) -> None:
    REGISTRY.register(BatcherGauges(batchers))
