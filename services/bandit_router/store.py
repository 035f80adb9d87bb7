"""The router's state in Redis (prefix ``mlops:bandit-router:``): endpoint specs and per-variant stats.

- ``endpoints``: set of endpoint names; ``endpoint:{name}``: its spec as JSON.
- ``stats:{name}``: hash with ``{variant}|decisions``, ``|rewards``, ``|sum``, ``|sumsq``.
- ``done:rewards:{event_id}``: marker of a reward already counted; set in the same Lua script as the
  stats change, so a redelivered reward is counted once and a crash cannot split marker and change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from redis.asyncio import Redis

from services.bandit_router.spec import EndpointSpec
from services.bandit_router.stats import VariantStats

PREFIX = "mlops:bandit-router:"

# KEYS: marker, stats hash. ARGV: marker ttl, variant, reward, reward^2. Returns 1 if applied, 0 if a duplicate.
_REWARD_LUA = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('HINCRBY', KEYS[2], ARGV[2] .. '|rewards', 1)
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[2] .. '|sum', ARGV[3])
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[2] .. '|sumsq', ARGV[4])
  return 1
end
return 0
"""

_FIELDS = ("decisions", "rewards", "sum", "sumsq")


def parse_stats(raw: dict[bytes, bytes], variants: Sequence[str]) -> list[VariantStats]:
    """Stats of ``variants`` (in order) from the stats hash's fields."""
    values = {k.decode(): v.decode() for k, v in raw.items()}

    def get(variant: str, name: str) -> float:
        return float(values.get(f"{variant}|{name}", 0) or 0)

    return [
        VariantStats(
            decisions=int(get(v, "decisions")),
            rewards=int(get(v, "rewards")),
            reward_sum=get(v, "sum"),
            reward_sumsq=get(v, "sumsq"),
        )
        for v in variants
    ]


class RouterStore:
    """Reads and writes the router's Redis keys."""

    def __init__(self, redis: Redis, dedup_ttl_s: int) -> None:
        self._redis = redis
        self._dedup_ttl_s = dedup_ttl_s
        self._reward = redis.register_script(_REWARD_LUA)

    @staticmethod
    def spec_key(endpoint: str) -> str:
        return f"{PREFIX}endpoint:{endpoint}"

    @staticmethod
    def stats_key(endpoint: str) -> str:
        return f"{PREFIX}stats:{endpoint}"

    # -- specs -----------------------------------------------------------------------------------------
    async def put_spec(self, spec: EndpointSpec, reset_variants: Sequence[str] = ()) -> None:
        """Store ``spec``; forget the stats of ``reset_variants`` (their target changed)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self.spec_key(spec.endpoint), json.dumps(spec.to_dict()))
            pipe.sadd(f"{PREFIX}endpoints", spec.endpoint)
            fields = [f"{v}|{f}" for v in reset_variants for f in _FIELDS]
            if fields:
                pipe.hdel(self.stats_key(spec.endpoint), *fields)
            await pipe.execute()

    async def get_spec(self, endpoint: str) -> EndpointSpec | None:
        raw = await self._redis.get(self.spec_key(endpoint))
        return EndpointSpec.from_dict(endpoint, json.loads(raw)) if raw else None

    async def list_specs(self) -> list[EndpointSpec]:
        names = sorted(n.decode() for n in await self._redis.smembers(f"{PREFIX}endpoints"))
        if not names:
            return []
        raws = await self._redis.mget([self.spec_key(n) for n in names])
        return [EndpointSpec.from_dict(n, json.loads(r)) for n, r in zip(names, raws, strict=True) if r]

    # -- stats -----------------------------------------------------------------------------------------
    async def stats(self, endpoint: str, variants: Sequence[str]) -> list[VariantStats]:
        return parse_stats(await self._redis.hgetall(self.stats_key(endpoint)), variants)

    async def count_decision(self, endpoint: str, variant: str) -> None:
        await self._redis.hincrby(self.stats_key(endpoint), f"{variant}|decisions", 1)

    async def apply_reward(self, event_id: str, endpoint: str, variant: str, reward: float) -> bool:
        """Count one reward once per ``event_id``; False when it was counted before."""
        marker = f"{PREFIX}done:rewards:{event_id}"
        applied = await self._reward(
            keys=[marker, self.stats_key(endpoint)],
            args=[self._dedup_ttl_s, variant, repr(float(reward)), repr(float(reward) ** 2)],
        )
        return bool(applied)
