"""In-memory stand-ins for the router's unit tests: a store with the Lua scripts' semantics (the same
contract, store_contract.py, runs against the real RouterStore on Redis in the integration tests), and
peers (registry, feature store, inference, producer) that record what they were asked."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mlops.v1 import registry_pb2
from services.bandit_router.clients import InferenceFailed, NotLoaded, Signature, Unservable
from services.bandit_router.policies import LinearState
from services.bandit_router.spec import EndpointSpec
from services.bandit_router.stats import LATENCY_EDGES_MS, VariantStats, latency_bucket
from services.bandit_router.store import REWARD_OUTCOMES, EndpointCounters, Event


@dataclass
class _Endpoint:
    spec: EndpointSpec | None = None
    revision: int = 0
    counters: dict[str, float] = field(default_factory=dict)
    latency: dict[str, int] = field(default_factory=dict)
    linear: dict[str, float] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    deadlines: dict[str, float] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    retired: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)


class MemoryStore:
    """RouterStore's interface and semantics, in a dict."""

    def __init__(self) -> None:
        self.endpoints: dict[str, _Endpoint] = {}
        self.locks: dict[str, str] = {}

    def _ep(self, endpoint: str) -> _Endpoint:
        return self.endpoints.setdefault(endpoint, _Endpoint())

    async def put_spec(self, spec: EndpointSpec, expected_revision: int, reset_variants: Sequence[str] = (),
                       events: Sequence[Event] = (), clear_linear: bool = False) -> int | None:
        ep = self._ep(spec.endpoint)
        if ep.revision != expected_revision:
            return None
        ep.revision += 1
        ep.spec = replace(spec, revision=ep.revision)
        if clear_linear:
            ep.linear.clear()
        for v in reset_variants:
            for table in (ep.counters, ep.latency, ep.linear):
                for key in [k for k in table if k.startswith(f"{v}|") and k != f"{v}|gen"]:
                    del table[key]
            ep.counters[f"{v}|gen"] = ep.counters.get(f"{v}|gen", 0) + 1
        ep.events = [e.to_json() for e in reversed(events)] + ep.events
        return ep.revision

    async def get_spec(self, endpoint: str) -> EndpointSpec | None:
        ep = self.endpoints.get(endpoint)
        return ep.spec if ep else None

    async def list_specs(self) -> list[EndpointSpec]:
        return [e.spec for _, e in sorted(self.endpoints.items()) if e.spec is not None]

    async def events(self, endpoint: str, limit: int = 200) -> list[dict[str, Any]]:
        import json

        return [json.loads(e) for e in reversed(self._ep(endpoint).events[:limit])]

    async def add_event(self, endpoint: str, event: Event) -> None:
        self._ep(endpoint).events.insert(0, event.to_json())

    async def retire(self, endpoint: str, targets: Sequence[str]) -> None:
        self._ep(endpoint).retired.update(targets)

    async def retired(self, endpoint: str) -> set[str]:
        return set(self._ep(endpoint).retired)

    async def lock(self, endpoint: str, name: str, ttl_s: float, owner: str) -> bool:
        key = f"{endpoint}:{name}"
        if key in self.locks:
            return False
        self.locks[key] = owner
        return True

    async def locked(self, endpoint: str, name: str) -> bool:
        return f"{endpoint}:{name}" in self.locks

    async def unlock(self, endpoint: str, name: str, owner: str) -> None:
        if self.locks.get(f"{endpoint}:{name}") == owner:
            del self.locks[f"{endpoint}:{name}"]

    async def stats(self, endpoint: str, variants: Sequence[str], latency: bool = False) -> list[VariantStats]:
        c = self._ep(endpoint).counters
        lat = self._ep(endpoint).latency
        out = []
        for v in variants:
            def get(name: str, v: str = v) -> float:
                return c.get(f"{v}|{name}", 0)

            buckets = tuple(lat.get(f"{v}|{i}", 0) for i in range(len(LATENCY_EDGES_MS) + 1)) if latency else ()
            out.append(VariantStats(
                int(get("decisions")), int(get("rewards")), get("sum"), get("sumsq"), int(get("settled")),
                int(get("expired")), int(get("errors")), int(get("shadows")), int(get("shadow_errors")), buckets))
        return out

    async def counters(self, endpoint: str) -> EndpointCounters:
        c = self._ep(endpoint).counters
        return EndpointCounters(int(c.get("_|late", 0)), int(c.get("_|stale", 0)))

    async def linear(self, endpoint: str, variants: Sequence[str], dim: int) -> list[LinearState]:
        values = self._ep(endpoint).linear
        out = []
        for v in variants:
            a, b = np.eye(dim), np.zeros(dim)
            for i in range(dim):
                b[i] = values.get(f"{v}|b|{i}", 0.0)
                for j in range(i, dim):
                    x = values.get(f"{v}|A|{i}|{j}", 0.0)
                    a[i, j] += x
                    if i != j:
                        a[j, i] += x
            out.append(LinearState(a, b))
        return out

    def _inc(self, endpoint: str, key: str, by: float = 1) -> None:
        c = self._ep(endpoint).counters
        c[key] = c.get(key, 0) + by

    async def record_decision(self, endpoint: str, variant: str, prediction_id: str, latency_ms: float | None,
                              deadline: float, context: Sequence[float] | None = None) -> None:
        ep = self._ep(endpoint)
        self._inc(endpoint, f"{variant}|decisions")
        if latency_ms is not None:
            key = f"{variant}|{latency_bucket(latency_ms)}"
            ep.latency[key] = ep.latency.get(key, 0) + 1
        gen = int(ep.counters.get(f"{variant}|gen", 0))
        ctx = ",".join(repr(float(x)) for x in context) if context is not None else ""
        ep.pending[prediction_id] = f"{variant}|{gen}" + (f"|{ctx}" if ctx else "")
        ep.deadlines[prediction_id] = deadline

    async def withdraw_decision(self, endpoint: str, prediction_id: str) -> bool:
        ep = self._ep(endpoint)
        record = ep.pending.pop(prediction_id, None)
        if record is None:
            return False
        ep.deadlines.pop(prediction_id, None)
        variant, gen = record.split("|")[:2]
        if int(ep.counters.get(f"{variant}|gen", 0)) == int(gen):
            self._inc(endpoint, f"{variant}|decisions", -1)
        return True

    async def add_latencies(self, endpoint: str, counts: dict[tuple[str, int], int]) -> None:
        ep = self._ep(endpoint)
        for (variant, bucket), n in counts.items():
            key = f"{variant}|{bucket}"
            ep.latency[key] = ep.latency.get(key, 0) + n

    async def record_errors(self, endpoint: str, variants: Sequence[str], shadow: bool = False) -> None:
        for v in variants:
            self._inc(endpoint, f"{v}|{'shadow_errors' if shadow else 'errors'}")

    async def record_shadow(self, endpoint: str, variant: str) -> None:
        self._inc(endpoint, f"{variant}|shadows")

    def _apply(self, endpoint: str, record: str, reward: float | None, expired: bool) -> int:
        ep = self._ep(endpoint)
        parts = record.split("|", 2)
        v, gen, ctx = parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""
        if int(ep.counters.get(f"{v}|gen", 0)) != gen:
            self._inc(endpoint, "_|stale")
            return 3
        self._inc(endpoint, f"{v}|settled")
        if expired:
            self._inc(endpoint, f"{v}|expired")
        if reward is None:
            return 4
        self._inc(endpoint, f"{v}|rewards")
        self._inc(endpoint, f"{v}|sum", reward)
        self._inc(endpoint, f"{v}|sumsq", reward * reward)
        if ctx:
            x = [float(p) for p in ctx.split(",")]
            for i in range(len(x)):
                ep.linear[f"{v}|b|{i}"] = ep.linear.get(f"{v}|b|{i}", 0.0) + reward * x[i]
                for j in range(i, len(x)):
                    ep.linear[f"{v}|A|{i}|{j}"] = ep.linear.get(f"{v}|A|{i}|{j}", 0.0) + x[i] * x[j]
        return 1

    async def apply_reward(self, event_id: str, endpoint: str, prediction_id: str, reward: float) -> str:
        ep = self._ep(endpoint)
        if event_id in ep.done:
            return REWARD_OUTCOMES[0]
        ep.done.add(event_id)
        record = ep.pending.pop(prediction_id, None)
        ep.deadlines.pop(prediction_id, None)
        if record is None:
            self._inc(endpoint, "_|late")
            return REWARD_OUTCOMES[2]
        return REWARD_OUTCOMES[self._apply(endpoint, record, reward, False)]

    async def expire(self, endpoint: str, now: float, missing_reward: float | None, limit: int = 1000) -> int:
        ep = self._ep(endpoint)
        due = sorted((d, pid) for pid, d in ep.deadlines.items() if d <= now)[:limit]
        for _, pid in due:
            ep.deadlines.pop(pid)
            record = ep.pending.pop(pid, None)
            if record is not None:
                self._apply(endpoint, record, missing_reward, True)
        return len(due)


SIGNATURES = {
    ("m", "1"): Signature("m", "1", ("a", "b", "c"), "input", "output"),
    ("m", "2"): Signature("m", "2", ("c", "a"), "input", "output"),
    ("m", "3"): Signature("m", "3", ("a",), "input", "output"),
    ("m", "4"): Signature("m", "4", ("a",), "input", "output"),
}


class Registry:
    """Signatures, aliases and stages; ``set_stage`` moves production like the real registry does."""

    def __init__(self) -> None:
        self.stages: dict[tuple[str, str], str] = {("m", "1"): "production", ("m", "2"): "candidate",
                                                   ("m", "3"): "candidate", ("m", "4"): "candidate"}
        self.calls: list[tuple[str, str, str, str]] = []

    async def signature(self, model: str, version: str) -> Signature:
        if (model, version) not in SIGNATURES:
            raise Unservable("unknown version")
        return SIGNATURES[(model, version)]

    async def resolve(self, model: str, alias: str) -> Signature:
        for (m, v), stage in sorted(self.stages.items()):
            if m == model and stage == alias:
                return SIGNATURES[(m, v)]
        raise Unservable(f"no {alias}")

    async def version(self, model: str, version: str) -> registry_pb2.ModelVersion:
        if (model, version) not in self.stages:
            raise Unservable("unknown version")
        return registry_pb2.ModelVersion(model=model, version=version, stage=self.stages[(model, version)])

    async def set_stage(self, model: str, version: str, stage: str, reason: str) -> registry_pb2.ModelVersion:
        self.calls.append((model, version, stage, reason))
        if stage == "production":
            for key, s in self.stages.items():
                if key[0] == model and s == "production" and key != (model, version):
                    self.stages[key] = "archived"
        self.stages[(model, version)] = stage
        return registry_pb2.ModelVersion(model=model, version=version, stage=stage)


class Features:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    async def online(self, entity_id: str, features: list[str]) -> dict[str, Any]:
        self.calls.append((entity_id, features))
        return {"a": 1.0, "b": 2.0, "c": 3.0} if entity_id == "e1" else {}


class Inference:
    """Answers ``[0.25, 0.75]``; versions can be made to fail, to load, or to block until released."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, list[float]]] = []
        self.loading: set[str] = set()
        self.failing: set[str] = set()
        self.blocked: dict[str, asyncio.Event] = {}
        self.outputs: dict[str, list[float]] = {}
        self.delays: dict[str, float] = {}

    async def infer(self, sig: Signature, row: list[float]) -> list[float]:
        if sig.version in self.delays:
            await asyncio.sleep(self.delays[sig.version])
        if sig.version in self.loading:
            raise NotLoaded("loading")
        if sig.version in self.blocked:
            await self.blocked[sig.version].wait()
        if sig.version in self.failing:
            raise InferenceFailed("boom")
        self.rows.append((sig.version, row))
        return self.outputs.get(sig.version, [0.25, 0.75])


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, str, str]] = []

    async def send(self, topic: str, message: Any, *, key: str, event_id: str) -> str:
        self.sent.append((topic, message, key, event_id))
        return event_id

    def on(self, topic: str) -> list[Any]:
        return [m for t, m, _, _ in self.sent if t == topic]
