"""Idempotent handling keyed by ``event_id``, with the markers in Redis.

Delivery is at least once (the embedded broker has no transactions), so every handler must make a
second delivery harmless. Two patterns:

- state in Redis: check the marker and apply the change in one Lua script (:meth:`ProcessedLog.once_script`),
  so the change and the marker land together or not at all;
- side effects elsewhere (a produced record): ``seen`` before, ``mark`` after. A crash between the two
  repeats the effect with the same ``event_id``, which the next consumer drops the same way.
"""

from __future__ import annotations

from redis.asyncio import Redis


class ProcessedLog:
    """The set of event_ids a consumer has handled, per namespace (usually the consumer group)."""

    def __init__(self, redis: Redis, namespace: str, ttl_s: int) -> None:
        self._redis = redis
        self.namespace = namespace
        self.ttl_s = ttl_s

    def key(self, event_id: str) -> str:
        return f"mlops:done:{self.namespace}:{event_id}"

    async def seen(self, event_id: str) -> bool:
        return bool(await self._redis.exists(self.key(event_id)))

    async def mark(self, event_id: str) -> bool:
        """Record ``event_id`` as handled; False when it already was."""
        return bool(await self._redis.set(self.key(event_id), 1, nx=True, ex=self.ttl_s))

    async def forget(self, event_id: str) -> None:
        await self._redis.delete(self.key(event_id))
