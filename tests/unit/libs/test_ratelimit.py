"""Rate-limit bookkeeping with a stand-in Redis: counts kept when a flush fails, old seconds forgotten."""

from __future__ import annotations

from typing import Any

import pytest

from mlops.auth.ratelimit import RateLimiter


class _Pipeline:
    def __init__(self, redis: _Redis) -> None:
        self._redis = redis
        self._ops: list[tuple[str, str, int]] = []

    def incrby(self, key: str, n: int) -> None:
        self._ops.append(("incrby", key, n))

    def expire(self, key: str, seconds: int) -> None:
        self._ops.append(("expire", key, seconds))

    async def execute(self) -> list[Any]:
        if self._redis.down:
            raise ConnectionError("redis is down")
        out: list[Any] = []
        for op, key, n in self._ops:
            if op == "incrby":
                self._redis.counts[key] = self._redis.counts.get(key, 0) + n
                out.append(self._redis.counts[key])
            else:
                out.append(True)
        return out


class _Redis:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.down = False

    def pipeline(self, transaction: bool = False) -> _Pipeline:
        return _Pipeline(self)


async def test_counts_survive_a_failed_flush_and_old_seconds_are_forgotten() -> None:
    now = [100.2]
    redis = _Redis()
    limiter = RateLimiter(redis, 3, clock=lambda: now[0])  # type: ignore[arg-type]
    assert [limiter.admit("t") for _ in range(2)] == [True, True]
    redis.down = True
    with pytest.raises(ConnectionError):
        await limiter.flush()
    redis.down = False
    await limiter.flush()
    assert redis.counts == {"mlops:rate:t:100": 2}, "nothing counted twice, nothing lost"
    now[0] = 102.0
    assert limiter.admit("t")
    await limiter.flush()
    assert ("t", 100) not in limiter._local
    await limiter.close()
