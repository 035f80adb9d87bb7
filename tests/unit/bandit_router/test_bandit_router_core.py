"""Endpoint specs and the router's predict flow, with in-memory stand-ins for Redis and the peers."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from mlops.errors import Conflict, InvalidArgument, NotFound
from mlops.v1 import events_pb2
from services.bandit_router.clients import NotLoaded, Unservable
from services.bandit_router.core import Router, feature_row
from services.bandit_router.settings import RouterSettings
from services.bandit_router.spec import EndpointSpec, PolicySpec, VariantSpec, validate
from tests.unit.bandit_router.bandit_router_fakes import (
    SIGNATURES,
    Features,
    Inference,
    MemoryStore,
    Producer,
    Registry,
)

ROW = {"a": 1, "b": 2, "c": 3}


@pytest.fixture
def parts() -> tuple[Router, MemoryStore, Features, Inference, Producer]:
    store, features, inference, producer = MemoryStore(), Features(), Inference(), Producer()
    router = Router(store, Registry(), features, inference, producer, RouterSettings(), rng=random.Random(1))  # type: ignore[arg-type]
    return router, store, features, inference, producer


def _spec(*variants: VariantSpec, endpoint: str = "ep", policy: str = "fixed", **params: Any) -> EndpointSpec:
    return EndpointSpec(endpoint=endpoint, variants=variants, policy=PolicySpec(policy, params))


def test_validate_fills_defaults_and_names_errors() -> None:
    spec = validate(_spec(VariantSpec(name="", model="m", version="1"), VariantSpec(name="", model="m")))
    assert [v.name for v in spec.variants] == ["m:1", "m@production"]
    assert spec.variants[1].alias == "production"
    bad = [
        (_spec(), "variants"),
        (_spec(VariantSpec(name="", model="")), "variants.0.model"),
        (_spec(VariantSpec(name="", model="m", version="1", alias="x")), "variants.0.alias"),
        (_spec(VariantSpec(name="", model="m", weight=-1)), "variants.0.weight"),
        (_spec(VariantSpec(name="x", model="m"), VariantSpec(name="x", model="m", version="2")), "variants.1.name"),
        (_spec(VariantSpec(name="", model="m", weight=0)), "variants"),
        (_spec(VariantSpec(name="", model="m"), endpoint="bad name"), "endpoint"),
    ]
    for spec, field in bad:
        with pytest.raises(InvalidArgument) as info:
            validate(spec)
        assert info.value.field == field


def test_spec_dict_and_proto_round_trip() -> None:
    spec = validate(_spec(VariantSpec(name="a", model="m", version="1", weight=0.3), VariantSpec("b", "m"),
                          policy="thompson", min_samples=50, auto_candidates=True))
    assert EndpointSpec.from_dict("ep", spec.to_dict()) == spec
    back = EndpointSpec.from_proto(spec.to_proto())
    assert back.variants == spec.variants and back.policy.type == "thompson"
    assert back.policy.params == {"min_samples": 50, "auto_candidates": True}


def test_feature_row_orders_by_signature_and_names_missing() -> None:
    sig = SIGNATURES[("m", "1")]
    assert feature_row(sig, {"c": 3, "a": True}, {"b": 2.5}, "e") == [1.0, 2.5, 3.0]
    with pytest.raises(InvalidArgument) as info:
        feature_row(sig, {"a": 1, "b": 2}, {}, "e9")
    assert info.value.field == "features.c" and "e9" in info.value.message
    with pytest.raises(InvalidArgument) as info:
        feature_row(sig, {"a": 1, "b": "x", "c": 3}, {}, None)
    assert info.value.field == "features.b"


async def test_put_rejects_policies_that_do_not_fit_the_variants(parts: Any) -> None:
    router, *_ = parts
    cases = [
        (_spec(VariantSpec("a", "m", "1"), policy="nope"), "policy.type"),
        (_spec(VariantSpec("a", "m", "1"), epsilon=0.1), "policy.params.epsilon"),  # not a fixed parameter
        (_spec(VariantSpec("a", "m", "1"), policy="epsilon_greedy", epsilon=2), "policy.params.epsilon"),
        (_spec(VariantSpec("a", "m", "1"), shadows=["zz"]), "policy.params.shadows"),
        (_spec(VariantSpec("a", "m", "1"), shadows=["a"]), "variants"),
        (_spec(VariantSpec("a", "m", "1"), VariantSpec("b", "m", "2"), policy="canary", canary="x"),
         "policy.params.canary"),
        (_spec(VariantSpec("a", "m", "1"), policy="linucb"), "policy.params.features"),
        (_spec(VariantSpec("a", "m", "1"), auto_promote=True), "policy.params.auto_promote"),
    ]
    for spec, field in cases:
        with pytest.raises(InvalidArgument) as info:
            await router.put_endpoint(spec)
        assert info.value.field == field, (spec, info.value.message)


async def test_predict_publishes_a_prediction_keyed_by_version_and_records_the_decision(parts: Any) -> None:
    router, store, features, inference, producer = parts
    await router.put_endpoint(_spec(VariantSpec("v2", "m", "2", weight=1.0)))
    result = await router.predict("ep", unit_id="u", features={"a": 1.0, "c": 3.0, "extra": "ignored"})
    assert (result.model, result.version, result.variant, result.outputs) == ("m", "2", "v2", [0.25, 0.75])
    assert inference.rows == [("2", [3.0, 1.0])]  # signature order c, a
    assert features.calls == []  # everything came with the request
    assert result.prediction_id in store.endpoints["ep"].pending  # the decision is recorded before the answer
    assert producer.sent == []  # the record waits in the outbox for others to go out with it...
    await router.outbox.flush()
    topic, record, key, event_id = producer.sent[0]
    assert topic == "predictions" and key == "m:2"  # one partition per model version
    assert event_id == f"prediction:{result.prediction_id}"
    assert isinstance(record, events_pb2.Prediction) and not record.shadow
    assert dict(record.features) == {"c": 3.0, "a": 1.0} and record.unit_id == "u" and record.endpoint == "ep"
    (variant,) = (await router.state("ep")).variants
    assert (variant.stats.decisions, variant.stats.pending) == (1, 1)
    assert result.prediction_id in store.endpoints["ep"].pending  # waiting for its reward


async def test_predict_reads_missing_features_from_the_online_store(parts: Any) -> None:
    router, _, features, inference, _ = parts
    await router.put_endpoint(_spec(VariantSpec("p", "m", alias="production")))
    result = await router.predict("ep", entity_id="e1", features={"a": 10.0})
    assert result.version == "1"
    assert features.calls == [("e1", ["b", "c"])]
    assert inference.rows == [("1", [10.0, 2.0, 3.0])]
    with pytest.raises(InvalidArgument) as info:
        await router.predict("ep", entity_id="unknown")
    assert info.value.field == "features.a"


async def test_predict_errors(parts: Any) -> None:
    router, *_ = parts
    with pytest.raises(NotFound):
        await router.predict("missing", features={"a": 1})
    await router.put_endpoint(_spec(VariantSpec("v", "m", "9")))
    with pytest.raises(InvalidArgument):
        await router.predict("ep")
    with pytest.raises(Conflict):
        await router.predict("ep", features={"a": 1})


async def test_put_resets_stats_only_of_retargeted_or_removed_variants(parts: Any) -> None:
    router, store, *_ = parts
    await router.put_endpoint(_spec(VariantSpec("a", "m", "1"), VariantSpec("b", "m", "2"), VariantSpec("c", "m", "3")))
    for name in ("a", "b", "c"):
        await store.record_decision("ep", name, f"p-{name}", 1.0, 1e12)
    stored = await router.put_endpoint(_spec(VariantSpec("a", "m", "1", weight=5), VariantSpec("b", "m", "1")))
    assert stored.revision == 2
    a, b = await store.stats("ep", ["a", "b"])
    assert (a.decisions, b.decisions) == (1, 0)
    assert (await store.stats("ep", ["c"]))[0].decisions == 0
    events = (await router.state("ep")).events
    assert [e["kind"] for e in events] == ["created", "updated"] and events[1]["details"]["reset"] == ["b", "c"]


async def test_rewards_are_counted_once_and_shown_in_state(parts: Any) -> None:
    router, *_ = parts
    await router.put_endpoint(_spec(VariantSpec("a", "m", "1"), VariantSpec("b", "m", "3")))
    pids = []
    while len(pids) < 4:
        r = await router.predict("ep", features=ROW)
        if r.variant == "a":
            pids.append(r.prediction_id)
    for pid, value in zip(pids, [1.0, 0.0, 1.0, 1.0], strict=True):
        reward = events_pb2.Reward(prediction_id=pid, endpoint="ep", variant="a", reward=value)
        assert await router.record_reward(f"reward:{pid}", reward) == "applied"
        assert await router.record_reward(f"reward:{pid}", reward) == "duplicate"
    late = events_pb2.Reward(prediction_id="never-made", endpoint="ep", variant="a", reward=1.0)
    assert await router.record_reward("reward:never-made", late) == "late"
    state = await router.state("ep")
    a, b = state.variants
    assert a.stats.rewards == 4 and a.stats.mean == pytest.approx(0.75) and a.stats.pending == 0
    assert a.stats.ci95() is not None and b.stats.rewards == 0
    assert a.probability_best == 1.0 and b.probability_best is None
    assert state.counters.late == 1 and state.status == "running"


async def test_background_publish_is_drained(parts: Any) -> None:
    _, store, features, inference, producer = parts
    router = Router(store, Registry(), features, inference, producer, RouterSettings(await_publish=False))  # type: ignore[arg-type]
    await router.put_endpoint(_spec(VariantSpec("v", "m", "1")))
    result = await router.predict("ep", features=ROW)
    await router.drain()
    assert [s[1].prediction_id for s in producer.sent] == [result.prediction_id]


async def test_unservable_variants_fall_back_to_the_others_and_count_errors(parts: Any) -> None:
    router, store, _, inference, _ = parts
    await router.put_endpoint(
        _spec(
            VariantSpec("prod", "m", alias="production", weight=1),
            VariantSpec("cand", "m", alias="shadow", weight=9),  # the alias points nowhere
            VariantSpec("new", "m", "2", weight=9),
        )
    )
    inference.loading.add("2")
    results = [await router.predict("ep", unit_id=f"u{i}", features=ROW) for i in range(30)]
    assert {r.variant for r in results} == {"prod"}
    prod, cand, new = await store.stats("ep", ["prod", "cand", "new"])
    assert prod.decisions == 30 and cand.errors + new.errors >= 30 and cand.decisions == new.decisions == 0
    inference.loading.clear()
    results = [await router.predict("ep", features=ROW) for i in range(30)]
    assert "new" in {r.variant for r in results}


async def test_no_servable_variant_raises_the_last_error(parts: Any) -> None:
    router, store, _, inference, _ = parts
    inference.loading.add("2")
    await router.put_endpoint(_spec(VariantSpec("c", "m", alias="shadow"), VariantSpec("n", "m", "2")))
    with pytest.raises((Unservable, NotLoaded)):
        await router.predict("ep", features=ROW)
    c, n = await store.stats("ep", ["c", "n"])
    assert (c.errors, n.errors) == (1, 1)


async def test_bandit_policies_decide_from_the_shared_statistics(parts: Any) -> None:
    router, store, *_ = parts
    await router.put_endpoint(_spec(VariantSpec("a", "m", "1"), VariantSpec("b", "m", "3"), policy="thompson"))
    # Another replica's rewards, as they would be in Redis: b converts, a does not.
    for i in range(200):
        for name, value in (("a", 0.0), ("b", 1.0)):
            await store.record_decision("ep", name, f"x{name}{i}", 1.0, 1e12)
            await store.apply_reward(f"r{name}{i}", "ep", f"x{name}{i}", value)
    picks = [(await router.predict("ep", features=ROW)).variant for _ in range(50)]
    assert picks.count("b") == 50
    state = await router.state("ep")
    assert state.variants[1].probability_best == pytest.approx(1.0) and state.variants[1].target_share == 1.0
    assert state.variants[0].regret == pytest.approx(200 * (201 / 202 - 1 / 202), rel=1e-6)


async def test_linucb_reads_its_context_and_remembers_it_for_the_reward(parts: Any) -> None:
    router, store, features, *_ = parts
    await router.put_endpoint(_spec(VariantSpec("a", "m", "3"), VariantSpec("b", "m", "4"), policy="linucb",
                                    features=["b"]))
    result = await router.predict("ep", entity_id="e1", features={"a": 1.0})
    assert features.calls[0] == ("e1", ["b"])  # the context feature came from the online store
    record = store.endpoints["ep"].pending[result.prediction_id]
    assert record.endswith("|1.0,2.0")  # [1, b]
    await router.record_reward("r1", events_pb2.Reward(prediction_id=result.prediction_id, endpoint="ep", reward=1.0))
    (state,) = await store.linear("ep", [result.variant], 2)
    assert state.b.tolist() == [1.0, 2.0]
    with pytest.raises(InvalidArgument) as info:
        await router.predict("ep", features={"a": 1.0})
    assert info.value.field == "features.b"


class _SlowStatsStore(MemoryStore):
    """Statistics reads that can be held at a gate, and counted."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def stats(self, endpoint: str, variants: Any, latency: bool = False) -> Any:
        self.reads += 1
        await self.gate.wait()
        return await super().stats(endpoint, variants, latency)


async def test_expired_statistics_are_refreshed_in_the_background_within_the_grace() -> None:
    store = _SlowStatsStore()
    settings = RouterSettings(stats_cache_ttl_s=0.05, cache_refresh_grace_s=0.3)
    router = Router(store, Registry(), Features(), Inference(), None, settings, rng=random.Random(2))  # type: ignore[arg-type]
    await router.put_endpoint(_spec(VariantSpec("a", "m", "1"), VariantSpec("b", "m", "3"), policy="thompson"))
    await router.predict("ep", features=ROW)
    await router.predict("ep", features=ROW)
    assert store.reads == 1  # the second one decided from the cached snapshot
    await asyncio.sleep(0.06)
    store.gate.clear()  # Redis is slow now
    # Expired but within the grace: the request decides from the snapshot while one read refreshes it.
    await asyncio.wait_for(router.predict("ep", features=ROW), timeout=5)
    await asyncio.wait_for(router.predict("ep", features=ROW), timeout=5)
    assert store.reads == 2
    await asyncio.sleep(0.4)
    # Past the grace (the refresh never came back): a request reads for itself, and waits for it.
    slow = asyncio.ensure_future(router.predict("ep", features=ROW))
    await asyncio.sleep(0.05)
    assert not slow.done() and store.reads == 3
    store.gate.set()
    await asyncio.wait_for(slow, timeout=5)
    await router.drain()
