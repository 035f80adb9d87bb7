"""The faust app factory: one place that turns platform settings into a faust.App tuned for the broker.

Group timings are settings, not constants: faust's defaults cost ~30 s from start to first event on
the embedded broker, the tuned values about 5 s. Exactly-once needs transactions, which the embedded
broker lacks, so the guarantee is at-least-once unless ``MLOPS_KAFKA_IDEMPOTENCE`` is on.
"""

from __future__ import annotations

import faust

from mlops.settings import PlatformSettings


def make_app(app_id: str, settings: PlatformSettings, **overrides: object) -> faust.App:
    options: dict[str, object] = {
        "broker": [f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        "store": "memory://",
        "topic_partitions": settings.topic_partitions,
        "topic_allow_declare": True,
        "broker_session_timeout": settings.consumer_session_timeout_ms / 1000,
        "broker_heartbeat_interval": settings.consumer_heartbeat_interval_ms / 1000,
        "broker_rebalance_timeout": settings.consumer_rebalance_timeout_ms / 1000,
        "producer_acks": -1 if settings.kafka_acks == "all" else int(settings.kafka_acks),
        "processing_guarantee": "exactly_once" if settings.kafka_idempotence else "at_least_once",
        "datadir": str(settings.home / "faust" / app_id),
        "web_enabled": False,
    }
    options.update(overrides)
    (settings.home / "faust").mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    return faust.App(settings.topic_prefix + app_id, **options)
