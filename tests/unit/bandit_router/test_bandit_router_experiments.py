"""Experiments that finish themselves (the Controller): canary guardrails roll back an erroring, slow or
losing canary; a bandit promotes its winner in the registry, archives the losers, removes them from the
endpoint and writes an audit record; candidates from models.lifecycle become arms; overdue rewards expire."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from mlops.bus import topics
from mlops.v1 import events_pb2
from services.bandit_router.core import Router
from services.bandit_router.experiments import Controller, PromotionInProgress
from services.bandit_router.settings import RouterSettings
from services.bandit_router.spec import EndpointSpec, PolicySpec, VariantSpec
from tests.unit.bandit_router.bandit_router_fakes import Features, Inference, MemoryStore, Producer, Registry

ROW = {"a": 1.0, "b": 2.0, "c": 3.0}


class Parts:
    def __init__(self) -> None:
        self.store, self.registry, self.inference, self.producer = MemoryStore(), Registry(), Inference(), Producer()
        self.now = time.time()
        self.router = Router(self.store, self.registry, Features(), self.inference, self.producer,  # type: ignore[arg-type]
                             RouterSettings(), rng=random.Random(5))
        self.controller = Controller(self.router, self.producer, clock=lambda: self.now)  # type: ignore[arg-type]

    async def put(self, policy: str, *variants: VariantSpec, **params: Any) -> EndpointSpec:
        return await self.router.put_endpoint(EndpointSpec("ep", variants, PolicySpec(policy, params)))

    async def serve(self, n: int, rates: dict[str, float] | None = None, seed: int = 0) -> list[str]:
        """``n`` predictions; with ``rates``, each gets a 0/1 reward drawn at its variant's rate."""
        rng = random.Random(seed)
        picks = []
        for i in range(n):
            result = await self.router.predict("ep", unit_id=f"u{seed}-{i}", features=ROW)
            picks.append(result.variant)
            if rates is not None:
                value = 1.0 if rng.random() < rates[result.variant] else 0.0
                reward = events_pb2.Reward(prediction_id=result.prediction_id, endpoint="ep", reward=value)
                await self.router.record_reward(f"reward:{result.prediction_id}", reward)
        return picks

    def audit(self) -> list[events_pb2.AuditRecord]:
        return self.producer.on(topics.AUDIT_LOG)


@pytest.fixture
def p() -> Parts:
    return Parts()


def _canary(**params: Any) -> dict[str, Any]:
    return {"primary": "stable", "canary": "new", "percent": 50, "min_requests": 20, **params}


async def test_canary_guardrail_rolls_back_a_variant_that_errors(p: Parts) -> None:
    await p.put("canary", VariantSpec("stable", "m", "1"), VariantSpec("new", "m", "2"), **_canary(max_error_rate=0.1))
    assert await p.controller.evaluate("ep") == []
    p.inference.failing.add("2")
    picks = await p.serve(60)
    assert set(picks) == {"stable"}  # every request the canary failed was answered by the primary
    assert await p.controller.evaluate("ep") == ["rolled_back"]
    state = await p.router.state("ep")
    assert state.status == "rolled_back"
    event = state.events[-1]
    assert event["kind"] == "rolled_back" and event["details"]["rule"] == "error_rate"
    assert event["details"]["variant"] == "new" and event["details"]["to"] == "stable"
    assert state.spec.policy.params["rolled_back"]["rule"] == "error_rate"
    (audit,) = p.audit()
    assert (audit.actor, audit.action, audit.target) == ("bandit-router", "rollback", "ep/new")
    assert "error rate" in audit.reason
    # After the rollback no request goes near the canary.
    errors_before = (await p.store.stats("ep", ["new"]))[0].errors
    assert set(await p.serve(40, seed=1)) == {"stable"}
    assert (await p.store.stats("ep", ["new"]))[0].errors == errors_before
    assert [v.target_share for v in (await p.router.state("ep")).variants] == [1.0, 0.0]
    assert await p.controller.evaluate("ep") == []


async def test_canary_guardrail_on_p99_latency(p: Parts) -> None:
    await p.put("canary", VariantSpec("stable", "m", "1"), VariantSpec("new", "m", "2"),
                **_canary(max_p99_ms=5, max_error_rate=None))
    p.inference.delays["2"] = 0.02
    await p.serve(60)
    assert await p.controller.evaluate("ep") == ["rolled_back"]
    assert (await p.router.state("ep")).events[-1]["details"]["rule"] == "p99_ms"


async def test_canary_guardrail_on_the_online_reward(p: Parts) -> None:
    await p.put("canary", VariantSpec("stable", "m", "1"), VariantSpec("new", "m", "2"),
                **_canary(max_reward_drop=0.1, min_rewards=30))
    await p.serve(100, rates={"stable": 0.8, "new": 0.2})
    assert await p.controller.evaluate("ep") == ["rolled_back"]
    assert (await p.router.state("ep")).events[-1]["details"]["rule"] == "reward_drop"


async def test_a_healthy_canary_stays(p: Parts) -> None:
    await p.put("canary", VariantSpec("stable", "m", "1"), VariantSpec("new", "m", "2"),
                **_canary(max_reward_drop=0.1, max_p99_ms=1000))
    await p.serve(200, rates={"stable": 0.5, "new": 0.55})
    assert await p.controller.evaluate("ep") == []
    assert (await p.router.state("ep")).status == "running"


async def test_thompson_promotes_the_winner_archives_losers_and_audits(p: Parts) -> None:
    await p.put("thompson", VariantSpec("old", "m", "1"), VariantSpec("v2", "m", "2"), VariantSpec("v3", "m", "3"),
                min_samples=30, promote_threshold=0.95)
    for seed in range(40):
        await p.serve(25, rates={"old": 0.3, "v2": 0.8, "v3": 0.4}, seed=seed)
        if await p.controller.evaluate("ep"):
            break
    else:
        pytest.fail("no promotion")
    assert ("m", "2", "production") == p.registry.calls[0][:3]
    assert p.registry.stages == {("m", "1"): "archived", ("m", "2"): "production", ("m", "3"): "archived",
                                 ("m", "4"): "candidate"}
    assert [c[:3] for c in p.registry.calls] == [("m", "2", "production"), ("m", "3", "archived")]
    state = await p.router.state("ep")
    assert [v.spec.name for v in state.variants] == ["v2"] and state.status == "promoted"
    promoted = state.events[-1]
    assert promoted["kind"] == "promoted" and promoted["details"]["version"] == "2"
    assert promoted["details"]["prob_best"] >= 0.95 and promoted["details"]["removed"] == ["old", "v3"]
    assert promoted["details"]["arms"]["old"]["rewards"] >= 30
    (audit,) = p.audit()
    assert (audit.action, audit.target) == ("promote", "m:2") and "P(best)" in audit.reason
    assert await p.store.retired("ep") == {"m:1", "m:3"}
    assert await p.controller.evaluate("ep") == []  # finished: one arm left
    assert set(await p.serve(10)) == {"v2"}


async def test_alias_winner_is_pinned_to_the_promoted_version(p: Parts) -> None:
    await p.put("thompson", VariantSpec("prod", "m", alias="production"), VariantSpec("cand", "m", alias="candidate"),
                min_samples=20)
    for seed in range(40):
        await p.serve(20, rates={"prod": 0.2, "cand": 0.9}, seed=seed)
        if await p.controller.evaluate("ep"):
            break
    (winner,) = (await p.router.state("ep")).variants
    assert (winner.spec.name, winner.spec.version, winner.spec.alias) == ("cand", "2", "")
    assert winner.stats.rewards >= 20  # its statistics carried over


async def test_auto_candidates_become_arms_once_and_the_loop_closes(p: Parts) -> None:
    await p.put("thompson", VariantSpec("primary", "m", alias="production"), auto_candidates=True, min_samples=20)
    await p.serve(30, rates={"primary": 0.5})
    event = events_pb2.ModelLifecycle(action="registered", model="m", version="4", stage="candidate")
    assert await p.controller.on_lifecycle(event) == ["ep"]
    assert await p.controller.on_lifecycle(event) == []  # a redelivered event changes nothing
    state = await p.router.state("ep")
    assert [(v.spec.name, v.spec.version) for v in state.variants] == [("primary", ""), ("v4", "4")]
    assert state.variants[0].stats.decisions == 0  # a new experiment: every arm starts afresh
    assert state.events[-1]["kind"] == "arm_added"
    for seed in range(40):
        await p.serve(20, rates={"primary": 0.3, "v4": 0.9}, seed=seed)
        if await p.controller.evaluate("ep"):
            break
    assert p.registry.stages[("m", "4")] == "production"
    assert [v.spec.name for v in (await p.router.state("ep")).variants] == ["v4"]


async def test_lifecycle_events_that_must_not_add_arms(p: Parts) -> None:
    await p.put("thompson", VariantSpec("primary", "m", alias="production"), auto_candidates=True)
    p.registry.stages[("m", "3")] = "archived"  # a replayed event: v3 was a candidate once, not any more
    assert await p.controller.on_lifecycle(events_pb2.ModelLifecycle(model="m", version="3", stage="candidate")) == []
    await p.store.retire("ep", ["m:4"])  # lost an earlier experiment here
    assert await p.controller.on_lifecycle(events_pb2.ModelLifecycle(model="m", version="4", stage="candidate")) == []
    assert await p.controller.on_lifecycle(events_pb2.ModelLifecycle(model="x", version="1", stage="candidate")) == []
    await p.router.put_endpoint(EndpointSpec("other", (VariantSpec("p", "m", alias="production"),),
                                             PolicySpec("thompson")))
    assert await p.controller.on_lifecycle(events_pb2.ModelLifecycle(model="m", version="2", stage="candidate")) \
        == ["ep"]  # "other" did not ask for candidates


async def test_archived_arms_leave_but_never_the_last_one_or_during_a_promotion(p: Parts) -> None:
    await p.put("thompson", VariantSpec("v2", "m", "2"), VariantSpec("v3", "m", "3"), auto_candidates=True)
    await p.store.lock("ep", "promote", 30, "someone")
    archived = events_pb2.ModelLifecycle(model="m", version="3", stage="archived")
    with pytest.raises(PromotionInProgress):
        await p.controller.on_lifecycle(archived)
    await p.store.unlock("ep", "promote", "someone")
    assert await p.controller.on_lifecycle(archived) == ["ep"]
    assert await p.controller.on_lifecycle(events_pb2.ModelLifecycle(model="m", version="2", stage="archived")) == []
    assert [v.spec.name for v in (await p.router.state("ep")).variants] == ["v2"]


async def test_overdue_rewards_expire_and_can_count_as_a_missing_reward(p: Parts) -> None:
    await p.put("thompson", VariantSpec("a", "m", "1"), VariantSpec("b", "m", "3"), reward_timeout_s=60,
                missing_reward=0.0)
    await p.serve(10)
    p.now += 61
    await p.controller.evaluate("ep")
    state = await p.router.state("ep")
    assert sum(v.stats.expired for v in state.variants) == 10
    assert sum(v.stats.rewards for v in state.variants) == 10 and sum(v.stats.pending for v in state.variants) == 0
