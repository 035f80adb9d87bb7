"""Per-token rate limits (requests per second, across every replica) without a Redis round trip on the
request path.

Each process counts its own requests per (token, second) and refuses at once when its count passes the
limit, so one replica enforces the limit exactly. A background flush, every ``flush_s``, adds the counts
to Redis (one pipeline: ``INCRBY`` + ``EXPIRE`` per key) and reads the totals back; a token whose total
over all replicas has passed the limit is refused for the rest of that second. Replicas together therefore
enforce it within one flush interval plus one round trip. If Redis is unreachable the flush is retried
and each replica still enforces its own count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis

log = logging.getLogger(__name__)

KEY_PREFIX = "mlops:rate:"


class RateLimiter:
    def __init__(self, redis: Redis, rate_per_s: int, flush_s: float = 0.02,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self.rate = rate_per_s
        self._flush_s = flush_s
        self._clock = clock
        self._local: dict[tuple[str, int], int] = {}
        self._pending: dict[tuple[str, int], int] = {}
        self._limited: dict[str, int] = {}
        self._flusher: asyncio.Task[None] | None = None

    def admit(self, token_id: str) -> bool:
        """Count one request of ``token_id``; False when it is over the limit (refuse it)."""
        second = int(self._clock())
        if self._limited.get(token_id) == second:
            return False
        key = (token_id, second)
        count = self._local.get(key, 0) + 1
        self._local[key] = count
        self._pending[key] = self._pending.get(key, 0) + 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())
        return count <= self.rate

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._flush_s)
        try:
            await self.flush()
        except Exception as exc:  # Redis down: keep the counts for the next flush, enforce locally meanwhile
            log.warning("rate-limit counts not flushed to Redis: %r", exc)

    async def flush(self) -> None:
        """Add the counts since the last flush to Redis and learn which tokens are over the limit."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for (token_id, second), n in pending.items():
                pipe.incrby(f"{KEY_PREFIX}{token_id}:{second}", n)
                pipe.expire(f"{KEY_PREFIX}{token_id}:{second}", 2)
            replies = await pipe.execute()
        except BaseException:
            for key, n in pending.items():
                self._pending[key] = self._pending.get(key, 0) + n
            raise
        for (token_id, second), total in zip(pending, replies[::2], strict=True):
            if int(total) > self.rate:
                self._limited[token_id] = second
        now = int(self._clock())
        for key in [k for k in self._local if k[1] < now - 1]:
            del self._local[key]
        for token_id in [t for t, s in self._limited.items() if s < now]:
            del self._limited[token_id]

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flusher
