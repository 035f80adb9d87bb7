"""The REST and gRPC adapters over the router (in-memory store and peers): declaring, listing, reading the
live state (every field the contract names), predicting, and errors as 4xx with the offending field."""

from __future__ import annotations

import math
import random
from typing import Any

import httpx
import pytest

from mlops.service import Service
from mlops.settings import PlatformSettings, service_settings
from mlops.v1 import bandit_router_pb2 as pb
from mlops.v1 import events_pb2
from services.bandit_router import grpc_api, http
from services.bandit_router.core import Router
from services.bandit_router.settings import RouterSettings
from tests.unit.bandit_router.bandit_router_fakes import Features, Inference, MemoryStore, Producer, Registry

SPEC = {"variants": [{"name": "a", "model": "m", "version": 1}, {"name": "b", "model": "m", "version": "3"}],
        "policy": {"type": "thompson", "params": {"min_samples": 5}}}


@pytest.fixture
def parts() -> tuple[httpx.AsyncClient, Router]:
    router = Router(MemoryStore(), Registry(), Features(), Inference(), Producer(), RouterSettings(),  # type: ignore[arg-type]
                    rng=random.Random(2))
    service = Service(PlatformSettings(), service_settings("bandit-router"), kafka=False)
    service.add_http(http.router(router))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://t"), router


async def test_put_list_predict_and_state(parts: Any) -> None:
    client, router = parts
    r = await client.put("/v1/endpoints/ep", json=SPEC)
    assert r.status_code == 200, r.text
    assert r.json()["revision"] == 1 and r.json()["variants"][0]["version"] == "1"
    assert [e["endpoint"] for e in (await client.get("/v1/endpoints")).json()["endpoints"]] == ["ep"]
    for i in range(30):
        r = await client.post("/v1/endpoints/ep/predict", json={"unit_id": f"u{i}", "features": {"a": 1, "b": 2,
                                                                                                "c": 3}})
        assert r.status_code == 200, r.text
        body = r.json()
        reward = events_pb2.Reward(prediction_id=body["prediction_id"], endpoint="ep",
                                   reward=1.0 if body["variant"] == "b" else float(i % 2))
        await router.record_reward(f"r{i}", reward)
    state = (await client.get("/v1/endpoints/ep")).json()
    assert state["status"] == "running" and state["decisions"] == 30 and state["rewards"] == 30
    assert state["regret"] is not None and state["late_rewards"] == 0
    assert [e["kind"] for e in state["events"]] == ["created"] and state["events"][0]["at"].endswith("+00:00")
    for v in state["variants"]:
        for key in ("traffic_share", "target_share", "reward_mean", "reward_ci_low", "reward_ci_high", "prob_best",
                    "regret", "pending", "expired", "errors", "error_rate", "p50_ms", "p99_ms", "role"):
            assert key in v, key
    a, b = state["variants"]
    assert a["traffic_share"] + b["traffic_share"] == pytest.approx(1.0)
    assert b["reward_mean"] == 1.0 and b["prob_best"] > 0.9 and b["regret"] == 0.0
    assert a["reward_ci_low"] < a["reward_mean"] < a["reward_ci_high"]

    proto = grpc_api.state_to_proto(await router.state("ep"))
    pa, pb_ = proto.variants
    assert (pa.name, pa.version, pa.weight) == ("a", "1", 1.0) and pb_.prob_best == pytest.approx(b["prob_best"])
    assert pb_.regret == 0.0 and proto.spec.policy.type == "thompson"


async def test_errors_are_4xx_naming_the_field(parts: Any) -> None:
    client, _ = parts
    cases = [
        ("put", "/v1/endpoints/ep", {"variants": []}, 400, "variants"),
        ("put", "/v1/endpoints/ep", {**SPEC, "policy": {"type": "thompson", "params": {"min_samples": -1}}}, 400,
         "policy.params.min_samples"),
        ("put", "/v1/endpoints/ep", {**SPEC, "policy": {"type": "bogus"}}, 400, "policy.type"),
        ("post", "/v1/endpoints/none/predict", {"features": {"a": 1}}, 404, "endpoint"),
        ("get", "/v1/endpoints/none", None, 404, "endpoint"),
    ]
    for method, path, body, status, field in cases:
        r = await client.request(method.upper(), path, json=body)
        assert r.status_code == status, (path, r.text)
        assert r.json()["error"]["field"] == field, r.text
    await client.put("/v1/endpoints/ep", json=SPEC)
    r = await client.post("/v1/endpoints/ep/predict", json={})
    assert r.status_code == 400 and r.json()["error"]["field"] == "features"


async def test_grpc_servicer(parts: Any) -> None:
    _, router = parts
    servicer = grpc_api.Servicer(router)
    spec = pb.EndpointSpec(endpoint="g", variants=[pb.Variant(name="a", model="m", version="1", weight=1.0)],
                           policy=pb.Policy(type="fixed"))
    stored = await servicer.PutEndpoint(spec, None)  # type: ignore[arg-type]
    assert stored.endpoint == "g"
    assert [e.endpoint for e in (await servicer.ListEndpoints(pb.ListEndpointsRequest(), None)).endpoints] == ["g"]  # type: ignore[arg-type]
    request = pb.PredictRequest(endpoint="g")
    request.features.update({"a": 1, "b": 2, "c": 3})
    answer = await servicer.Predict(request, None)  # type: ignore[arg-type]
    assert (answer.variant, answer.version) == ("a", "1")
    state = await servicer.GetEndpoint(pb.GetEndpointRequest(endpoint="g"), None)  # type: ignore[arg-type]
    (v,) = state.variants
    assert v.decisions == 1 and math.isnan(v.reward_mean) and math.isnan(v.prob_best) and math.isnan(v.regret)
