"""What a router store must do, as checks that take a store: run against the in-memory fake by the unit
tests and against the real RouterStore (Lua scripts on redis-server) by the integration tests, so the
fake the unit tests lean on cannot drift from the real thing."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from services.bandit_router.spec import EndpointSpec, VariantSpec
from services.bandit_router.store import Event


def spec(endpoint: str, *names: str) -> EndpointSpec:
    return EndpointSpec(endpoint, tuple(VariantSpec(n, "m", "1") for n in names))


async def check_specs_compare_and_set(store: Any, endpoint: str) -> None:
    assert await store.put_spec(spec(endpoint, "a"), 0, events=[Event.now("created")]) == 1
    assert await store.put_spec(spec(endpoint, "a", "b"), 0) is None  # a stale writer loses
    assert await store.put_spec(spec(endpoint, "a", "b"), 1, events=[Event.now("one"), Event.now("two")]) == 2
    stored = await store.get_spec(endpoint)
    assert stored is not None and stored.revision == 2 and [v.name for v in stored.variants] == ["a", "b"]
    assert endpoint in [s.endpoint for s in await store.list_specs()]
    assert [e["kind"] for e in await store.events(endpoint)] == ["created", "one", "two"]
    await store.add_event(endpoint, Event.now("note", x=1))
    assert (await store.events(endpoint))[-1] == {"time": pytest.approx(time.time(), abs=60), "kind": "note",
                                                  "details": {"x": 1}}
    assert await store.get_spec(f"{endpoint}-missing") is None


async def check_decisions_and_rewards(store: Any, endpoint: str) -> None:
    await store.put_spec(spec(endpoint, "a", "b"), 0)
    later = time.time() + 3600
    for i in range(3):
        await store.record_decision(endpoint, "a", f"{endpoint}-p{i}", 0.8, later)
    await store.record_decision(endpoint, "b", f"{endpoint}-q0", 40.0, later)
    assert await store.apply_reward(f"r:{endpoint}-p0", endpoint, f"{endpoint}-p0", 1.0) == "applied"
    assert await store.apply_reward(f"r:{endpoint}-p0", endpoint, f"{endpoint}-p0", 1.0) == "duplicate"
    assert await store.apply_reward(f"r:{endpoint}-p1", endpoint, f"{endpoint}-p1", 0.5) == "applied"
    assert await store.apply_reward(f"r:{endpoint}-zz", endpoint, f"{endpoint}-zz", 1.0) == "late"
    await store.record_errors(endpoint, ["a", "b"])
    await store.record_errors(endpoint, ["b"], shadow=True)
    await store.record_shadow(endpoint, "b")
    a, b = await store.stats(endpoint, ["a", "b"], latency=True)
    assert (a.decisions, a.rewards, a.settled, a.pending, a.errors) == (3, 2, 2, 1, 1)
    assert a.reward_sum == pytest.approx(1.5) and a.reward_sumsq == pytest.approx(1.25)
    assert (b.decisions, b.rewards, b.errors, b.shadows, b.shadow_errors) == (1, 0, 1, 1, 1)
    assert a.latency_ms(0.99) == 1.0 and b.latency_ms(0.99) == 50.0
    assert (await store.stats(endpoint, ["a"]))[0].latency == ()
    assert (await store.counters(endpoint)).late == 1


async def check_reset_makes_old_rewards_stale(store: Any, endpoint: str) -> None:
    await store.put_spec(spec(endpoint, "a", "b"), 0)
    later = time.time() + 3600
    await store.record_decision(endpoint, "a", f"{endpoint}-old", 1.0, later)
    await store.record_decision(endpoint, "b", f"{endpoint}-keep", 1.0, later)
    assert await store.put_spec(spec(endpoint, "a", "b"), 1, reset_variants=["a"]) == 2
    a, b = await store.stats(endpoint, ["a", "b"])
    assert a.decisions == 0 and b.decisions == 1
    assert await store.apply_reward(f"r:{endpoint}-old", endpoint, f"{endpoint}-old", 1.0) == "stale"
    assert await store.apply_reward(f"r:{endpoint}-keep", endpoint, f"{endpoint}-keep", 1.0) == "applied"
    await store.record_decision(endpoint, "a", f"{endpoint}-new", 1.0, later)
    assert await store.apply_reward(f"r:{endpoint}-new", endpoint, f"{endpoint}-new", 1.0) == "applied"
    a, b = await store.stats(endpoint, ["a", "b"])
    assert (a.decisions, a.rewards, b.rewards) == (1, 1, 1)
    assert (await store.counters(endpoint)).stale == 1


async def check_overdue_rewards_expire(store: Any, endpoint: str) -> None:
    await store.put_spec(spec(endpoint, "a"), 0)
    now = time.time()
    await store.record_decision(endpoint, "a", f"{endpoint}-1", 1.0, now - 1)
    await store.record_decision(endpoint, "a", f"{endpoint}-2", 1.0, now + 3600)
    assert await store.expire(endpoint, now, None) == 1
    assert await store.expire(endpoint, now, None) == 0
    (a,) = await store.stats(endpoint, ["a"])
    assert (a.decisions, a.settled, a.expired, a.rewards, a.pending) == (2, 1, 1, 0, 1)
    # The reward shows up after all: its decision was settled, so it is late and not counted.
    assert await store.apply_reward(f"r:{endpoint}-1", endpoint, f"{endpoint}-1", 1.0) == "late"
    # With a missing reward configured, an overdue decision counts as that reward.
    assert await store.expire(endpoint, now + 7200, 0.0) == 1
    (a,) = await store.stats(endpoint, ["a"])
    assert (a.settled, a.expired, a.rewards, a.reward_sum) == (2, 2, 1, 0.0)


async def check_withdrawn_decisions_and_deferred_latencies(store: Any, endpoint: str) -> None:
    await store.put_spec(spec(endpoint, "a", "b"), 0)
    later = time.time() + 3600
    # A decision recorded while its variant is still serving; the variant fails and is taken back.
    await store.record_decision(endpoint, "a", f"{endpoint}-1", None, later)
    await store.record_decision(endpoint, "a", f"{endpoint}-2", None, later)
    assert await store.withdraw_decision(endpoint, f"{endpoint}-1")
    assert not await store.withdraw_decision(endpoint, f"{endpoint}-1")  # once
    await store.record_decision(endpoint, "b", f"{endpoint}-1", None, later)  # the variant that answered
    a, b = await store.stats(endpoint, ["a", "b"], latency=True)
    assert (a.decisions, a.pending, b.decisions, b.pending) == (1, 1, 1, 1)
    assert sum(a.latency) == sum(b.latency) == 0  # no latency yet: it is counted afterwards
    await store.add_latencies(endpoint, {("a", 0): 1, ("b", 3): 2})
    await store.add_latencies(endpoint, {})
    a, b = await store.stats(endpoint, ["a", "b"], latency=True)
    assert (a.latency[0], sum(a.latency), b.latency[3], sum(b.latency)) == (1, 1, 2, 2)
    # The reward of the re-recorded prediction goes to the variant that answered.
    assert await store.apply_reward(f"r:{endpoint}-1", endpoint, f"{endpoint}-1", 1.0) == "applied"
    a, b = await store.stats(endpoint, ["a", "b"])
    assert (a.rewards, b.rewards) == (0, 1)
    # A decision withdrawn after its variant's statistics were reset leaves the new counts alone.
    await store.record_decision(endpoint, "a", f"{endpoint}-3", None, later)
    assert await store.put_spec(spec(endpoint, "a", "b"), 1, reset_variants=["a"]) == 2
    await store.record_decision(endpoint, "a", f"{endpoint}-4", None, later)
    assert await store.withdraw_decision(endpoint, f"{endpoint}-3")
    (a,) = await store.stats(endpoint, ["a"])
    assert (a.decisions, a.pending) == (1, 1)


async def check_linear_state(store: Any, endpoint: str) -> None:
    await store.put_spec(spec(endpoint, "a", "b"), 0)
    later = time.time() + 3600
    await store.record_decision(endpoint, "a", f"{endpoint}-1", 1.0, later, context=[1.0, 0.5, -2.0])
    await store.record_decision(endpoint, "a", f"{endpoint}-2", 1.0, later, context=[1.0, 1.0, 0.0])
    assert await store.apply_reward(f"r:{endpoint}-1", endpoint, f"{endpoint}-1", 2.0) == "applied"
    assert await store.apply_reward(f"r:{endpoint}-2", endpoint, f"{endpoint}-2", 0.0) == "applied"
    a, b = await store.linear(endpoint, ["a", "b"], 3)
    x1, x2 = np.array([1.0, 0.5, -2.0]), np.array([1.0, 1.0, 0.0])
    np.testing.assert_allclose(a.a, np.eye(3) + np.outer(x1, x1) + np.outer(x2, x2))
    np.testing.assert_allclose(a.b, 2.0 * x1)
    np.testing.assert_allclose(b.a, np.eye(3))
    assert await store.put_spec(spec(endpoint, "a", "b"), 1, clear_linear=True) == 2
    np.testing.assert_allclose((await store.linear(endpoint, ["a"], 3))[0].a, np.eye(3))


async def check_locks_and_retired(store: Any, endpoint: str) -> None:
    assert await store.lock(endpoint, "promote", 30, "me")
    assert not await store.lock(endpoint, "promote", 30, "you")
    assert await store.locked(endpoint, "promote")
    await store.unlock(endpoint, "promote", "you")
    assert await store.locked(endpoint, "promote")
    await store.unlock(endpoint, "promote", "me")
    assert not await store.locked(endpoint, "promote")
    await store.retire(endpoint, ["m:2", "m:3"])
    assert await store.retired(endpoint) == {"m:2", "m:3"}


CHECKS = [
    check_specs_compare_and_set,
    check_decisions_and_rewards,
    check_reset_makes_old_rewards_stale,
    check_overdue_rewards_expire,
    check_withdrawn_decisions_and_deferred_latencies,
    check_linear_state,
    check_locks_and_retired,
]
