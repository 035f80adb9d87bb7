"""Prometheus metrics of the feedback service: join outcomes and online quality per model version.

Quality gauges are set from the running sums in Redis (after each join and on a timer), so every
replica reports the same shared figures.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from services.feedback.join import Quality

FEEDBACK_ACCEPTED = Counter("mlops_feedback_accepted_total", "Feedback items accepted by the API.", ["transport"])
JOIN_RESULTS = Counter(
    "mlops_feedback_join_total",
    "Join steps by result (joined, held = unmatched on arrival, duplicate, expired, shadow_skipped).",
    ["result"],
)
PENDING = Gauge("mlops_feedback_pending", "Feedback held while waiting for its prediction.")

QUALITY_COUNT = Gauge("mlops_feedback_outcomes", "Feedback joined to predictions.", ["model", "version"])
QUALITY_ACCURACY = Gauge("mlops_feedback_accuracy", "Online accuracy from labelled feedback.", ["model", "version"])
QUALITY_REWARD = Gauge("mlops_feedback_reward_mean", "Mean reward of joined feedback.", ["model", "version"])
QUALITY_VALUE = Gauge("mlops_feedback_value_mean", "Mean business value of joined feedback.", ["model", "version"])
QUALITY_LOG_LOSS = Gauge("mlops_feedback_log_loss", "Mean log loss of labelled feedback.", ["model", "version"])
QUALITY_CALIBRATION = Gauge(
    "mlops_feedback_calibration_error", "Expected calibration error (10 confidence bins) of labelled feedback.",
    ["model", "version"],
)


def publish_quality(q: Quality) -> None:
    labels = (q.model, q.version)
    QUALITY_COUNT.labels(*labels).set(q.count)
    for gauge, figure in (
        (QUALITY_ACCURACY, q.accuracy),
        (QUALITY_REWARD, q.reward_mean),
        (QUALITY_VALUE, q.value_mean),
        (QUALITY_LOG_LOSS, q.log_loss),
        (QUALITY_CALIBRATION, q.calibration_error),
    ):
        if figure is not None:
            gauge.labels(*labels).set(figure)
