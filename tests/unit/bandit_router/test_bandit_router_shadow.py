"""Shadow traffic: a slow or failing shadow changes neither the response nor its latency -- the live
answer is complete while the shadow is still blocked, and the shadow's failure never reaches the caller.
Shadow predictions are logged with ``shadow=true``."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from mlops.v1 import events_pb2
from services.bandit_router.core import Router
from services.bandit_router.settings import RouterSettings
from services.bandit_router.spec import EndpointSpec, PolicySpec, VariantSpec
from tests.unit.bandit_router.bandit_router_fakes import Features, Inference, MemoryStore, Producer, Registry

ROW = {"a": 1.0, "b": 2.0, "c": 3.0}


@pytest.fixture
def parts() -> tuple[Router, MemoryStore, Inference, Producer]:
    store, inference, producer = MemoryStore(), Inference(), Producer()
    router = Router(store, Registry(), Features(), inference, producer,  # type: ignore[arg-type]
                    RouterSettings(shadow_max_inflight=8), rng=random.Random(3))
    return router, store, inference, producer


async def _endpoint(router: Router, **params: Any) -> None:
    await router.put_endpoint(EndpointSpec("ep", (
        VariantSpec("live", "m", "1"), VariantSpec("slow", "m", "2"), VariantSpec("broken", "m", "3"),
    ), PolicySpec("shadow", {"primary": "live", **params})))


async def test_a_slow_shadow_does_not_hold_the_response(parts: Any) -> None:
    router, store, inference, producer = parts
    await _endpoint(router, shadows=["slow"])
    inference.outputs["1"] = [0.9, 0.1]
    inference.blocked["2"] = gate = asyncio.Event()
    # The gate stays shut until after the answer: if predict waited for the shadow, it would never return
    # (the generous deadline only turns such a deadlock into a failure instead of a hang).
    result = await asyncio.wait_for(router.predict("ep", unit_id="u1", features=ROW), timeout=60)
    # The answer is the primary's, and it came back while the shadow is still waiting on its model.
    assert (result.variant, result.version, result.outputs) == ("live", "1", [0.9, 0.1])
    assert len(router.mirror.tasks) == 1 and not next(iter(router.mirror.tasks)).done()
    await router.outbox.flush()  # the live record goes out without waiting for the shadow either
    assert len(router.mirror.tasks) == 1 and not next(iter(router.mirror.tasks)).done()
    live_records = [m for m in producer.on("predictions") if not m.shadow]
    assert [m.prediction_id for m in live_records] == [result.prediction_id]
    assert not [m for m in producer.on("predictions") if m.shadow]
    gate.set()
    await router.drain()
    (shadow,) = [m for m in producer.on("predictions") if m.shadow]
    assert isinstance(shadow, events_pb2.Prediction)
    assert shadow.prediction_id == f"{result.prediction_id}.slow" and shadow.variant == "slow"
    assert (shadow.model, shadow.version) == ("m", "2") and dict(shadow.features) == {"c": 3.0, "a": 1.0}
    live, slow = await store.stats("ep", ["live", "slow"])
    assert (live.decisions, slow.decisions, slow.shadows) == (1, 0, 1)


async def test_a_failing_shadow_changes_nothing_the_caller_sees(parts: Any) -> None:
    router, store, inference, producer = parts
    await _endpoint(router, shadows=["broken"])
    inference.failing.add("3")
    results = [await router.predict("ep", features=ROW) for _ in range(5)]
    await router.drain()
    assert {(r.variant, tuple(r.outputs)) for r in results} == {("live", (0.25, 0.75))}
    assert not [m for m in producer.on("predictions") if m.shadow]
    (broken,) = await store.stats("ep", ["broken"])
    assert (broken.shadow_errors, broken.errors, broken.decisions) == (5, 0, 0)


async def test_shadow_fraction_and_many_shadows(parts: Any) -> None:
    router, store, _, producer = parts
    await _endpoint(router, shadow_fraction=0.3)  # every non-primary variant is a shadow by default
    for i in range(200):
        await router.predict("ep", unit_id=f"u{i}", features=ROW)
    await router.drain()
    slow, broken = await store.stats("ep", ["slow", "broken"])
    assert slow.shadows == broken.shadows  # the same requests go to every shadow
    assert 35 < slow.shadows < 85
    mirrored_units = {m.unit_id for m in producer.on("predictions") if m.shadow}
    for i in range(200):  # the same units are mirrored every time
        await router.predict("ep", unit_id=f"u{i}", features=ROW)
    await router.drain()
    assert {m.unit_id for m in producer.on("predictions") if m.shadow} == mirrored_units


async def test_mirrors_beyond_the_limit_are_dropped_not_queued(parts: Any) -> None:
    router, _, inference, _ = parts
    await _endpoint(router, shadows=["slow"])
    inference.blocked["2"] = gate = asyncio.Event()
    for _ in range(20):
        await router.predict("ep", features=ROW)
    assert len(router.mirror.tasks) == 8  # shadow_max_inflight
    gate.set()
    await router.drain()
    assert not router.mirror.tasks


async def test_shadows_with_a_bandit_take_no_live_traffic(parts: Any) -> None:
    router, *_ = parts
    await router.put_endpoint(EndpointSpec("ep", (
        VariantSpec("a", "m", "1"), VariantSpec("b", "m", "4"), VariantSpec("s", "m", "2"),
    ), PolicySpec("thompson", {"shadows": ["s"]})))
    picks = {(await router.predict("ep", features=ROW)).variant for _ in range(40)}
    await router.drain()
    assert picks == {"a", "b"}
    state = await router.state("ep")
    assert [v.role for v in state.variants] == ["live", "live", "shadow"]
    assert state.variants[2].stats.shadows == 40 and state.variants[2].target_share == 0.0
