"""Kafka handlers of the bandit router.

``rewards``: each ``Reward`` updates its endpoint/variant statistics exactly once per ``event_id``
(marker and update in one Redis Lua script), so redelivery after a crash or rebalance is harmless.
"""

from __future__ import annotations

import logging
import math

from mlops.bus.consumer import Handler
from mlops.bus.envelope import Envelope
from mlops.errors import PoisonRecord
from mlops.v1 import events_pb2
from services.bandit_router.core import Router

log = logging.getLogger(__name__)


def on_reward(router: Router) -> Handler:
    async def handle(env: Envelope) -> None:
        reward = env.decode(events_pb2.Reward)
        if not reward.endpoint or not reward.variant:
            raise PoisonRecord("reward without endpoint or variant", field="endpoint")
        if not math.isfinite(reward.reward):
            raise PoisonRecord(f"reward is not finite: {reward.reward}", field="reward")
        if not await router.record_reward(env.event_id, reward):
            log.debug("duplicate reward %s ignored", env.event_id)

    return handle
