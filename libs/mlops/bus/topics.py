"""Every Kafka topic the platform uses, in one place, and their creation before services start.

The embedded broker auto-creates topics on first produce with its own partition count, which breaks
faust tables and consumer-group assumptions, so ``mlops up`` and every service declare them first.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from mlops.settings import PlatformSettings

log = logging.getLogger(__name__)

EVENTS_RAW = "events.raw"
EVENTS_VALIDATED = "events.validated"
EVENTS_DEADLETTER = "events.deadletter"
PREDICTIONS = "predictions"
FEEDBACK_RAW = "feedback.raw"
LABELS = "labels"
REWARDS = "rewards"
DRIFT_ALERTS = "drift.alerts"
TRAINING_REQUESTS = "training.requests"
MODELS_LIFECYCLE = "models.lifecycle"
AUDIT_LOG = "audit.log"

ALL: tuple[str, ...] = (
    EVENTS_RAW,
    EVENTS_VALIDATED,
    EVENTS_DEADLETTER,
    PREDICTIONS,
    FEEDBACK_RAW,
    LABELS,
    REWARDS,
    DRIFT_ALERTS,
    TRAINING_REQUESTS,
    MODELS_LIFECYCLE,
    AUDIT_LOG,
)


def name(topic: str, settings: PlatformSettings) -> str:
    """The topic's name on the broker, with ``MLOPS_TOPIC_PREFIX`` applied."""
    return f"{settings.topic_prefix}{topic}"


def logical(full_name: str, settings: PlatformSettings) -> str:
    """The inverse of :func:`name`."""
    prefix = settings.topic_prefix
    return full_name[len(prefix) :] if prefix and full_name.startswith(prefix) else full_name


async def ensure_topics(settings: PlatformSettings, timeout_s: float = 60.0) -> None:
    """Create every platform topic that does not exist yet, retrying until the broker answers."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            wanted = [name(t, settings) for t in ALL]
            new = [
                NewTopic(t, num_partitions=settings.topic_partitions, replication_factor=1)
                for t in wanted
                if t not in existing
            ]
            for topic in new:
                try:
                    await admin.create_topics([topic])
                except TopicAlreadyExistsError:
                    pass
            if new:
                log.info("created topics: %s", ", ".join(t.name for t in new))
            return
        except (KafkaConnectionError, OSError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.info("waiting for the broker at %s: %s", settings.kafka_bootstrap, exc)
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
