"""The router's state in Redis (prefix ``mlops:bandit-router:``), shared by every router replica: endpoint
specs (compare-and-set by revision), per-variant statistics, LinUCB state, pending decisions awaiting
their reward, and the endpoint's event log. Every change is one Lua script (:mod:`.lua`)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis.asyncio import Redis

from services.bandit_router import lua
from services.bandit_router.policies import LinearState
from services.bandit_router.spec import EndpointSpec
from services.bandit_router.stats import LATENCY_EDGES_MS, VariantStats, latency_bucket

PREFIX = "mlops:bandit-router:"
MAX_EVENTS = 200
_COUNTERS = ("decisions", "rewards", "settled", "expired", "errors", "shadows", "shadow_errors")

REWARD_OUTCOMES = {0: "duplicate", 1: "applied", 2: "late", 3: "stale"}


@dataclass(frozen=True, slots=True)
class EndpointCounters:
    """Endpoint-wide counts: rewards that came after their decision was settled or never known (late),
    and rewards for a variant whose statistics were reset since (stale)."""

    late: int = 0
    stale: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    time: float
    kind: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"time": self.time, "kind": self.kind, "details": self.details}, sort_keys=True)

    @classmethod
    def now(cls, kind: str, **details: Any) -> Event:
        return cls(time.time(), kind, details)


def parse_stats(raw: dict[bytes, bytes], variants: Sequence[str], latency: dict[bytes, bytes] | None = None
                ) -> list[VariantStats]:
    """Stats of ``variants`` (in order) from the stats hash (and the latency hash, when given)."""
    values = {k.decode(): v.decode() for k, v in raw.items()}
    lat = {k.decode(): int(v) for k, v in (latency or {}).items()}
    want_latency = latency is not None

    def get(variant: str, name: str) -> float:
        return float(values.get(f"{variant}|{name}", 0) or 0)

    out = []
    for v in variants:
        buckets = tuple(lat.get(f"{v}|{i}", 0) for i in range(len(LATENCY_EDGES_MS) + 1)) if want_latency else ()
        counts = {name: int(get(v, name)) for name in _COUNTERS}
        out.append(
            VariantStats(reward_sum=get(v, "sum"), reward_sumsq=get(v, "sumsq"), latency=buckets, **counts)
        )
    return out


def parse_linear(raw: dict[bytes, bytes], variants: Sequence[str], dim: int) -> list[LinearState]:
    """Each variant's ``A = I + sum(x x^T)`` and ``b`` from the LinUCB hash (upper triangle stored)."""
    values = {k.decode(): float(v) for k, v in raw.items()}
    out = []
    for v in variants:
        a, b = np.eye(dim), np.zeros(dim)
        for i in range(dim):
            b[i] = values.get(f"{v}|b|{i}", 0.0)
            for j in range(i, dim):
                x = values.get(f"{v}|A|{i}|{j}", 0.0)
                a[i, j] += x
                if j != i:
                    a[j, i] += x
        out.append(LinearState(a, b))
    return out


class RouterStore:
    """Reads and writes the router's Redis keys."""

    def __init__(self, redis: Redis, dedup_ttl_s: int) -> None:
        self._redis = redis
        self._dedup_ttl_s = dedup_ttl_s
        self._decision = redis.register_script(lua.DECISION)
        self._withdraw = redis.register_script(lua.WITHDRAW)
        self._latencies = redis.register_script(lua.LATENCIES)
        self._reward = redis.register_script(lua.REWARD)
        self._expire = redis.register_script(lua.EXPIRE)
        self._put = redis.register_script(lua.PUT_SPEC)

    @staticmethod
    def key(endpoint: str, kind: str) -> str:
        return f"{PREFIX}{{{endpoint}}}:{kind}"

    # -- specs -----------------------------------------------------------------------------------------
    async def put_spec(
        self,
        spec: EndpointSpec,
        expected_revision: int,
        reset_variants: Sequence[str] = (),
        events: Sequence[Event] = (),
        clear_linear: bool = False,
    ) -> int | None:
        """Store ``spec`` if the stored revision is still ``expected_revision``; the new revision, or None
        when another writer got there first. Resets ``reset_variants`` and appends ``events`` atomically."""
        ep = spec.endpoint
        k = self.key
        body = json.dumps({**spec.to_dict(), "revision": expected_revision + 1})
        result = await self._put(
            keys=[k(ep, "spec"), k(ep, "revision"), f"{PREFIX}endpoints", k(ep, "stats"), k(ep, "lat"),
                  k(ep, "events"), k(ep, "lin")],
            args=[expected_revision, body, ep, MAX_EVENTS, "1" if clear_linear else "0", len(reset_variants),
                  *reset_variants, *(e.to_json() for e in events)],
        )
        return None if int(result) < 0 else int(result)

    async def get_spec(self, endpoint: str) -> EndpointSpec | None:
        raw = await self._redis.get(self.key(endpoint, "spec"))
        return EndpointSpec.from_dict(endpoint, json.loads(raw)) if raw else None

    async def list_specs(self) -> list[EndpointSpec]:
        names = sorted(n.decode() for n in await self._redis.smembers(f"{PREFIX}endpoints"))
        if not names:
            return []
        raws = await self._redis.mget([self.key(n, "spec") for n in names])
        return [EndpointSpec.from_dict(n, json.loads(r)) for n, r in zip(names, raws, strict=True) if r]

    async def events(self, endpoint: str, limit: int = MAX_EVENTS) -> list[dict[str, Any]]:
        """The endpoint's events, oldest first."""
        raws = await self._redis.lrange(self.key(endpoint, "events"), 0, limit - 1)
        return [json.loads(r) for r in reversed(raws)]

    async def add_event(self, endpoint: str, event: Event) -> None:
        """An event that changes no spec (e.g. a failed promotion attempt)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.key(endpoint, "events"), event.to_json())
            pipe.ltrim(self.key(endpoint, "events"), 0, MAX_EVENTS - 1)
            await pipe.execute()

    async def retire(self, endpoint: str, targets: Sequence[str]) -> None:
        """Remember targets (``model:version``) removed from the endpoint, so they are never re-added."""
        if targets:
            await self._redis.sadd(self.key(endpoint, "retired"), *targets)

    async def retired(self, endpoint: str) -> set[str]:
        return {t.decode() for t in await self._redis.smembers(self.key(endpoint, "retired"))}

    async def lock(self, endpoint: str, name: str, ttl_s: float, owner: str) -> bool:
        """A short lease so that one replica at a time runs an action (promotion, rollback)."""
        return bool(await self._redis.set(self.key(endpoint, f"lock:{name}"), owner, nx=True, px=int(ttl_s * 1000)))

    async def locked(self, endpoint: str, name: str) -> bool:
        return bool(await self._redis.exists(self.key(endpoint, f"lock:{name}")))

    async def unlock(self, endpoint: str, name: str, owner: str) -> None:
        key = self.key(endpoint, f"lock:{name}")
        if (await self._redis.get(key) or b"").decode() == owner:
            await self._redis.delete(key)

    # -- statistics ------------------------------------------------------------------------------------
    async def stats(self, endpoint: str, variants: Sequence[str], latency: bool = False) -> list[VariantStats]:
        if not latency:
            return parse_stats(await self._redis.hgetall(self.key(endpoint, "stats")), variants)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.key(endpoint, "stats"))
            pipe.hgetall(self.key(endpoint, "lat"))
            raw, lat = await pipe.execute()
        return parse_stats(raw, variants, lat or {})

    async def counters(self, endpoint: str) -> EndpointCounters:
        late, stale = await self._redis.hmget(self.key(endpoint, "stats"), ["_|late", "_|stale"])
        return EndpointCounters(int(late or 0), int(stale or 0))

    async def linear(self, endpoint: str, variants: Sequence[str], dim: int) -> list[LinearState]:
        return parse_linear(await self._redis.hgetall(self.key(endpoint, "lin")), variants, dim)

    async def record_decision(
        self,
        endpoint: str,
        variant: str,
        prediction_id: str,
        latency_ms: float | None,
        deadline: float,
        context: Sequence[float] | None = None,
    ) -> None:
        """Count a decision and remember it until its reward comes (or ``deadline`` passes); its latency
        goes into the histogram too, unless None (the caller counts it later with :meth:`add_latencies`)."""
        k = self.key
        await self._decision(
            keys=[k(endpoint, "stats"), k(endpoint, "lat"), k(endpoint, "pending"), k(endpoint, "deadlines")],
            args=[variant, "" if latency_ms is None else latency_bucket(latency_ms), prediction_id, repr(deadline),
                  ",".join(repr(float(x)) for x in context) if context is not None else ""],
        )

    async def withdraw_decision(self, endpoint: str, prediction_id: str) -> bool:
        """Take back a pending decision (its variant failed to serve); whether it was pending."""
        k = self.key
        result = await self._withdraw(
            keys=[k(endpoint, "stats"), k(endpoint, "pending"), k(endpoint, "deadlines")], args=[prediction_id]
        )
        return bool(int(result))

    async def add_latencies(self, endpoint: str, counts: dict[tuple[str, int], int]) -> None:
        """Add ``(variant, bucket) -> count`` to the endpoint's latency histogram, in one step."""
        if not counts:
            return
        args: list[str | int] = []
        for (variant, bucket), n in counts.items():
            args += [f"{variant}|{bucket}", n]
        await self._latencies(keys=[self.key(endpoint, "lat")], args=args)

    async def record_errors(self, endpoint: str, variants: Sequence[str], shadow: bool = False) -> None:
        if not variants:
            return
        name = "shadow_errors" if shadow else "errors"
        async with self._redis.pipeline(transaction=False) as pipe:
            for v in variants:
                pipe.hincrby(self.key(endpoint, "stats"), f"{v}|{name}", 1)
            await pipe.execute()

    async def record_shadow(self, endpoint: str, variant: str) -> None:
        await self._redis.hincrby(self.key(endpoint, "stats"), f"{variant}|shadows", 1)

    async def apply_reward(self, event_id: str, endpoint: str, prediction_id: str, reward: float) -> str:
        """Settle a decision with its reward, once per ``event_id``: applied, duplicate, late or stale."""
        k = self.key
        result = await self._reward(
            keys=[k(endpoint, f"done:{event_id}"), k(endpoint, "stats"), k(endpoint, "pending"),
                  k(endpoint, "deadlines"), k(endpoint, "lin")],
            args=[self._dedup_ttl_s, prediction_id, repr(float(reward))],
        )
        return REWARD_OUTCOMES[int(result)]

    async def expire(self, endpoint: str, now: float, missing_reward: float | None, limit: int = 1000) -> int:
        """Settle decisions whose reward is overdue (as ``missing_reward`` when set); returns how many."""
        k = self.key
        return int(
            await self._expire(
                keys=[k(endpoint, "stats"), k(endpoint, "pending"), k(endpoint, "deadlines"), k(endpoint, "lin")],
                args=[repr(now), limit, "" if missing_reward is None else repr(float(missing_reward))],
            )
        )
