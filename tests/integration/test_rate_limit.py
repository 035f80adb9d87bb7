"""Per-token rate limits on the real redis-server: one replica refuses past the limit at once, and
replicas that are each under it are refused once their total in Redis passes it (after one flush)."""

from __future__ import annotations

import time
import uuid

import pytest
from redis.asyncio import Redis

from mlops.auth.ratelimit import KEY_PREFIX, RateLimiter
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def _second_far_from_its_end() -> None:
    """Counts are per second: start a check early in one so it cannot straddle two."""
    if time.time() % 1 > 0.6:
        time.sleep(1 - time.time() % 1 + 0.01)


async def test_one_replica_refuses_past_the_limit_and_counts_reach_redis(stack: Stack) -> None:
    redis = Redis.from_url(stack.redis_url)
    limiter = RateLimiter(redis, 5, flush_s=0.01)
    token = f"rl-{uuid.uuid4().hex[:8]}"
    try:
        _second_far_from_its_end()
        second = int(time.time())
        verdicts = [limiter.admit(token) for _ in range(8)]
        assert verdicts == [True] * 5 + [False] * 3
        await limiter.flush()
        assert int(await redis.get(f"{KEY_PREFIX}{token}:{second}")) == 8
        assert 0 < await redis.ttl(f"{KEY_PREFIX}{token}:{second}") <= 2
        assert limiter.admit(f"{token}-other"), "another token is not affected"
    finally:
        await limiter.close()
        await redis.aclose()


async def test_replicas_under_the_limit_each_are_refused_once_their_total_passes_it(stack: Stack) -> None:
    clients = [Redis.from_url(stack.redis_url) for _ in range(3)]
    replicas = [RateLimiter(c, 10, flush_s=0.01) for c in clients]
    token = f"rl-{uuid.uuid4().hex[:8]}"
    try:
        _second_far_from_its_end()
        for replica in replicas:  # 3 x 4 = 12 > 10, but each replica saw only 4
            assert all(replica.admit(token) for _ in range(4))
        for replica in replicas:
            await replica.flush()
        # The last replica to flush saw the total pass 10; the others learn it at their next flush.
        assert not replicas[-1].admit(token)
        for replica in replicas[:-1]:
            replica.admit(token)
            await replica.flush()
            assert not replica.admit(token)
    finally:
        for replica in replicas:
            await replica.close()
        for c in clients:
            await c.aclose()
