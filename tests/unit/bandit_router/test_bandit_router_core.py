"""Endpoint specs and the router's predict flow, with in-memory stand-ins for Redis and the peers."""

from __future__ import annotations

import random
from typing import Any

import pytest

from mlops.errors import Conflict, InvalidArgument, NotFound
from mlops.v1 import events_pb2
from services.bandit_router.clients import NotLoaded, Signature, Unservable
from services.bandit_router.core import Router, feature_row
from services.bandit_router.settings import RouterSettings
from services.bandit_router.spec import EndpointSpec, VariantSpec, validate
from services.bandit_router.stats import VariantStats

SIG = {
    ("m", "1"): Signature("m", "1", ("a", "b", "c"), "input", "output"),
    ("m", "2"): Signature("m", "2", ("c", "a"), "input", "output"),
}


class MemoryStore:
    def __init__(self) -> None:
        self.specs: dict[str, EndpointSpec] = {}
        self.stats_: dict[tuple[str, str], VariantStats] = {}
        self.reset: list[str] = []
        self.done: set[str] = set()

    async def put_spec(self, spec: EndpointSpec, reset_variants: Any = ()) -> None:
        self.specs[spec.endpoint] = spec
        self.reset.extend(reset_variants)

    async def get_spec(self, endpoint: str) -> EndpointSpec | None:
        return self.specs.get(endpoint)

    async def list_specs(self) -> list[EndpointSpec]:
        return list(self.specs.values())

    async def stats(self, endpoint: str, variants: Any) -> list[VariantStats]:
        return [self.stats_.get((endpoint, v), VariantStats()) for v in variants]

    async def count_decision(self, endpoint: str, variant: str) -> None:
        s = self.stats_.get((endpoint, variant), VariantStats())
        self.stats_[(endpoint, variant)] = VariantStats(s.decisions + 1, s.rewards, s.reward_sum, s.reward_sumsq)

    async def apply_reward(self, event_id: str, endpoint: str, variant: str, reward: float) -> bool:
        if event_id in self.done:
            return False
        self.done.add(event_id)
        s = self.stats_.get((endpoint, variant), VariantStats())
        self.stats_[(endpoint, variant)] = VariantStats(
            s.decisions, s.rewards + 1, s.reward_sum + reward, s.reward_sumsq + reward * reward
        )
        return True


class Registry:
    async def signature(self, model: str, version: str) -> Signature:
        if (model, version) not in SIG:
            raise Unservable("unknown version")
        return SIG[(model, version)]

    async def resolve(self, model: str, alias: str) -> Signature:
        if alias == "candidate":
            raise Unservable("no candidate")
        return SIG[(model, "1")]


class Features:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    async def online(self, entity_id: str, features: list[str]) -> dict[str, Any]:
        self.calls.append((entity_id, features))
        return {"a": 1.0, "b": 2.0, "c": 3.0} if entity_id == "e1" else {}


class Inference:
    def __init__(self) -> None:
        self.rows: list[list[float]] = []
        self.loading_v2 = False

    async def infer(self, sig: Signature, row: list[float]) -> list[float]:
        if sig.version == "2" and self.loading_v2:
            raise NotLoaded("loading")
        self.rows.append(row)
        return [0.25, 0.75]


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, str, str]] = []

    async def send(self, topic: str, message: Any, *, key: str, event_id: str) -> str:
        self.sent.append((topic, message, key, event_id))
        return event_id


@pytest.fixture
def parts() -> tuple[Router, MemoryStore, Features, Inference, Producer]:
    store, features, inference, producer = MemoryStore(), Features(), Inference(), Producer()
    router = Router(store, Registry(), features, inference, producer, RouterSettings(), rng=random.Random(1))  # type: ignore[arg-type]
    return router, store, features, inference, producer


def _spec(*variants: VariantSpec, endpoint: str = "ep") -> EndpointSpec:
    return EndpointSpec(endpoint=endpoint, variants=variants)


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
    spec = validate(_spec(VariantSpec(name="a", model="m", version="1", weight=0.3), VariantSpec("b", "m")))
    assert EndpointSpec.from_dict("ep", spec.to_dict()) == spec
    assert EndpointSpec.from_proto(spec.to_proto()) == spec


def test_feature_row_orders_by_signature_and_names_missing() -> None:
    sig = SIG[("m", "1")]
    assert feature_row(sig, {"c": 3, "a": True}, {"b": 2.5}, "e") == [1.0, 2.5, 3.0]
    with pytest.raises(InvalidArgument) as info:
        feature_row(sig, {"a": 1, "b": 2}, {}, "e9")
    assert info.value.field == "features.c" and "e9" in info.value.message
    with pytest.raises(InvalidArgument) as info:
        feature_row(sig, {"a": 1, "b": "x", "c": 3}, {}, None)
    assert info.value.field == "features.b"


async def test_predict_publishes_a_prediction_and_counts_the_decision(parts: Any) -> None:
    router, _, features, inference, producer = parts
    await router.put_endpoint(_spec(VariantSpec("v2", "m", "2", weight=1.0)))
    result = await router.predict("ep", unit_id="u", features={"a": 1.0, "c": 3.0, "extra": "ignored"})
    assert (result.model, result.version, result.variant, result.outputs) == ("m", "2", "v2", [0.25, 0.75])
    assert inference.rows == [[3.0, 1.0]]  # signature order c, a
    assert features.calls == []  # everything came with the request
    topic, record, key, event_id = producer.sent[0]
    assert topic == "predictions" and key == result.prediction_id
    assert event_id == f"prediction:{result.prediction_id}"
    assert isinstance(record, events_pb2.Prediction)
    assert dict(record.features) == {"c": 3.0, "a": 1.0} and record.unit_id == "u" and record.endpoint == "ep"
    assert (await router.state("ep")).variants[0].stats.decisions == 1


async def test_predict_reads_missing_features_from_the_online_store(parts: Any) -> None:
    router, _, features, inference, _ = parts
    await router.put_endpoint(_spec(VariantSpec("p", "m", alias="production")))
    result = await router.predict("ep", entity_id="e1", features={"a": 10.0})
    assert result.version == "1"
    assert features.calls == [("e1", ["b", "c"])]
    assert inference.rows == [[10.0, 2.0, 3.0]]
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


async def test_put_resets_stats_only_of_retargeted_variants(parts: Any) -> None:
    router, store, *_ = parts
    await router.put_endpoint(_spec(VariantSpec("a", "m", "1"), VariantSpec("b", "m", "2")))
    await router.put_endpoint(_spec(VariantSpec("a", "m", "1", weight=5), VariantSpec("b", "m", "1")))
    assert store.reset == ["b"]


async def test_rewards_are_counted_once_and_shown_in_state(parts: Any) -> None:
    router, *_ = parts
    await router.put_endpoint(_spec(VariantSpec("a", "m", "1"), VariantSpec("b", "m", "2")))
    for i, r in enumerate([1.0, 0.0, 1.0, 1.0]):
        reward = events_pb2.Reward(prediction_id=str(i), endpoint="ep", variant="a", reward=r)
        assert await router.record_reward(f"reward:{i}", reward)
        assert not await router.record_reward(f"reward:{i}", reward)
    state = await router.state("ep")
    a, b = state.variants
    assert a.stats.rewards == 4 and a.stats.mean == pytest.approx(0.75)
    assert a.stats.ci95() is not None and b.stats.rewards == 0
    assert a.probability_best == 1.0 and b.probability_best is None


async def test_background_publish_is_drained(parts: Any) -> None:
    _, store, features, inference, producer = parts
    router = Router(store, Registry(), features, inference, producer, RouterSettings(await_publish=False))  # type: ignore[arg-type]
    await router.put_endpoint(_spec(VariantSpec("v", "m", "1")))
    result = await router.predict("ep", features={"a": 1, "b": 2, "c": 3})
    await router.drain()
    assert [s[2] for s in producer.sent] == [result.prediction_id]


async def test_unservable_variants_fall_back_to_the_others(parts: Any) -> None:
    router, store, _, inference, _ = parts
    await router.put_endpoint(
        _spec(
            VariantSpec("prod", "m", alias="production", weight=1),
            VariantSpec("cand", "m", alias="candidate", weight=9),
            VariantSpec("new", "m", "2", weight=9),
        )
    )
    inference.loading_v2 = True
    results = [await router.predict("ep", unit_id=f"u{i}", features={"a": 1, "b": 2, "c": 3}) for i in range(30)]
    assert {r.variant for r in results} == {"prod"}
    assert store.stats_[("ep", "prod")].decisions == 30
    inference.loading_v2 = False
    results = [await router.predict("ep", features={"a": 1, "b": 2, "c": 3}) for i in range(30)]
    assert "new" in {r.variant for r in results}


async def test_no_servable_variant_raises_the_last_error(parts: Any) -> None:
    router, _, _, inference, _ = parts
    inference.loading_v2 = True
    await router.put_endpoint(_spec(VariantSpec("c", "m", alias="candidate"), VariantSpec("n", "m", "2")))
    with pytest.raises((Unservable, NotLoaded)):
        await router.predict("ep", features={"a": 1, "b": 2, "c": 3})
