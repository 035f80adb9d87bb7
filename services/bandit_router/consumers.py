"""Kafka handlers of the bandit router.

``rewards``: each ``Reward`` settles its decision exactly once per ``event_id`` (marker and update in one
Redis Lua script), so redelivery after a crash or rebalance is harmless; a reward whose decision already
timed out is counted as late, one for a variant reset since as stale.

``models.lifecycle``: candidates become arms of endpoints with ``auto_candidates``; archived versions
leave them. One consumer group for every replica, and the change itself is idempotent in Redis.
"""

from __future__ import annotations

import logging
import math

from mlops.bus.consumer import Handler
from mlops.bus.envelope import Envelope
from mlops.errors import PoisonRecord
from mlops.v1 import events_pb2
from services.bandit_router.core import Router
from services.bandit_router.experiments import Controller

log = logging.getLogger(__name__)

MAX_REWARD = 1e12


def on_reward(router: Router) -> Handler:
    async def handle(env: Envelope) -> None:
        reward = env.decode(events_pb2.Reward)
        if not reward.endpoint or not reward.prediction_id:
            raise PoisonRecord("reward without endpoint or prediction_id", field="endpoint")
        if not math.isfinite(reward.reward) or abs(reward.reward) > MAX_REWARD:
            # Its square must stay finite in the Redis sums (HINCRBYFLOAT refuses inf).
            raise PoisonRecord(f"reward is not a finite number within +-{MAX_REWARD:g}: {reward.reward}",
                               field="reward")
        outcome = await router.record_reward(env.event_id, reward)
        if outcome != "applied":
            log.debug("reward %s: %s", env.event_id, outcome)

    return handle


def on_lifecycle(controller: Controller) -> Handler:
    async def handle(env: Envelope) -> None:
        event = env.decode(events_pb2.ModelLifecycle)
        if not event.model or not event.version:
            raise PoisonRecord("lifecycle event without model or version", field="model")
        changed = await controller.on_lifecycle(event)
        if changed:
            log.info("%s:%s -> %s changed endpoints %s", event.model, event.version, event.stage, ", ".join(changed))

    return handle
