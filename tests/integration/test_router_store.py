"""The router's Redis store on the real redis-server: the Lua scripts honour the same contract as the
in-memory store the unit tests use (tests/unit/bandit_router/bandit_router_store_contract.py), and many
concurrent writers (as router replicas are) lose no count and never both win a compare-and-set."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from services.bandit_router.store import RouterStore
from tests.integration.stack import Stack
from tests.unit.bandit_router.bandit_router_store_contract import CHECKS, spec

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_redis_store_honours_the_contract(stack: Stack, check: Callable[[Any, str], Awaitable[None]]) -> None:
    redis = Redis.from_url(stack.redis_url)
    try:
        await check(RouterStore(redis, 3600), f"st-{uuid.uuid4().hex[:8]}")
    finally:
        await redis.aclose()


async def test_concurrent_replicas_lose_no_count(stack: Stack) -> None:
    endpoint = f"st-{uuid.uuid4().hex[:8]}"
    clients = [Redis.from_url(stack.redis_url) for _ in range(4)]
    stores = [RouterStore(c, 3600) for c in clients]
    try:
        await stores[0].put_spec(spec(endpoint, "a", "b"), 0)
        later = time.time() + 3600

        async def replica(i: int) -> None:
            store = stores[i]
            for j in range(100):
                pid = f"{endpoint}-{i}-{j}"
                await store.record_decision(endpoint, "ab"[j % 2], pid, 1.0, later)
                # Every reward is delivered twice, to two different replicas.
                for other in (store, stores[(i + 1) % 4]):
                    await other.apply_reward(f"reward:{pid}", endpoint, pid, float(j % 3 == 0))

        await asyncio.gather(*(replica(i) for i in range(4)))
        a, b = await stores[1].stats(endpoint, ["a", "b"])
        assert (a.decisions, b.decisions, a.rewards, b.rewards) == (200, 200, 200, 200)
        assert a.reward_sum + b.reward_sum == 4 * 34
        # Two writers racing from the same revision: exactly one wins.
        results = await asyncio.gather(*(s.put_spec(spec(endpoint, "a", "b", "c"), 1) for s in stores))
        assert sorted(results, key=lambda r: r or 0) == [None, None, None, 2]
    finally:
        for c in clients:
            await c.aclose()
