"""The Kafka handlers: rewards settle decisions once, bad records are poison (dead-lettered), lifecycle
events reach the controller."""

from __future__ import annotations

import random
from typing import Any

import pytest

from mlops.bus.envelope import Envelope
from mlops.errors import PoisonRecord
from mlops.v1 import events_pb2
from services.bandit_router import consumers
from services.bandit_router.core import Router
from services.bandit_router.experiments import Controller
from services.bandit_router.settings import RouterSettings
from services.bandit_router.spec import EndpointSpec, PolicySpec, VariantSpec
from tests.unit.bandit_router.bandit_router_fakes import Features, Inference, MemoryStore, Producer, Registry


def _env(message: Any, event_id: str) -> Envelope:
    return Envelope(topic="t", value=message.SerializeToString(), headers={"event_id": event_id})


@pytest.fixture
def router() -> Router:
    return Router(MemoryStore(), Registry(), Features(), Inference(), Producer(), RouterSettings(),  # type: ignore[arg-type]
                  rng=random.Random(0))


async def test_reward_handler_settles_once_and_rejects_bad_records(router: Router) -> None:
    await router.put_endpoint(EndpointSpec("ep", (VariantSpec("a", "m", "1"),)))
    result = await router.predict("ep", features={"a": 1, "b": 2, "c": 3})
    handle = consumers.on_reward(router)
    reward = events_pb2.Reward(prediction_id=result.prediction_id, endpoint="ep", variant="a", reward=1.0)
    await handle(_env(reward, "reward:1"))
    await handle(_env(reward, "reward:1"))
    (state,) = (await router.state("ep")).variants
    assert state.stats.rewards == 1
    for bad in (events_pb2.Reward(prediction_id="x", reward=1.0),
                events_pb2.Reward(prediction_id="x", endpoint="ep", reward=float("nan")),
                events_pb2.Reward(prediction_id="x", endpoint="ep", reward=1e200)):
        with pytest.raises(PoisonRecord):
            await handle(_env(bad, "reward:bad"))
    with pytest.raises(PoisonRecord):
        await handle(Envelope(topic="t", value=b"\xff\xff", headers={"event_id": "junk"}))


async def test_lifecycle_handler_adds_candidates(router: Router) -> None:
    await router.put_endpoint(EndpointSpec("ep", (VariantSpec("p", "m", alias="production"),),
                                           PolicySpec("thompson", {"auto_candidates": True})))
    handle = consumers.on_lifecycle(Controller(router, None))
    await handle(_env(events_pb2.ModelLifecycle(action="registered", model="m", version="2", stage="candidate"), "l1"))
    assert [v.spec.name for v in (await router.state("ep")).variants] == ["p", "v2"]
    with pytest.raises(PoisonRecord):
        await handle(_env(events_pb2.ModelLifecycle(stage="candidate"), "l2"))
