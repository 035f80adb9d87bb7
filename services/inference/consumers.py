"""Kafka handlers of the inference service.

``models.lifecycle``: every event only triggers a resync from the registry (the registry is the truth;
the event says "look again"). A resync is idempotent by nature (it converges to the registry's state),
so redelivered or replayed events are harmless and need no event_id marker; triggers coalesce.
"""

from __future__ import annotations

import logging

from mlops.bus.consumer import Handler
from mlops.bus.envelope import Envelope
from mlops.v1 import events_pb2
from services.inference.repository import ModelRepository

log = logging.getLogger(__name__)


def on_lifecycle(repository: ModelRepository) -> Handler:
    async def handle(env: Envelope) -> None:
        event = env.decode(events_pb2.ModelLifecycle)
        log.debug("lifecycle %s %s:%s -> %s", event.action, event.model, event.version, event.stage)
        repository.request_sync()

    return handle
