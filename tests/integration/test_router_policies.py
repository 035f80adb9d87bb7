"""Router policies on the real stack: a canary that cannot serve is rolled back by its guardrail (with an
audit record) while every request is answered by the primary; shadow predictions are logged to
``predictions`` with ``shadow=true`` and never answer the caller; the gRPC API lists endpoints and reports
the live state's fields; ``mlops endpoints put|list|show``."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest

from mlops.bus import topics
from mlops.v1 import bandit_router_pb2 as pb
from mlops.v1 import bandit_router_pb2_grpc, events_pb2
from tests.integration.kafka_util import read_until
from tests.integration.stack import Stack
from tests.integration.toy_model import register, wait_ready

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(stack: Stack) -> Iterator[str]:
    """A model with two served versions: 1 in production, 2 a candidate."""
    name = f"rp-{uuid.uuid4().hex[:8]}"
    for stage in ("production", "candidate"):
        version = register(stack.grpc("registry"), name, ["x"], stage)
        wait_ready(stack.url("inference"), name, version.version)
    yield name


async def test_a_canary_that_errors_is_rolled_back_to_the_primary(stack: Stack, model: str) -> None:
    endpoint = f"rp-canary-{uuid.uuid4().hex[:8]}"
    router = stack.url("bandit-router")
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.put(f"{router}/v1/endpoints/{endpoint}", json={
            "variants": [{"name": "stable", "model": model, "version": "1"},
                         {"name": "next", "model": model, "version": "99"}],  # not in the registry: fails
            "policy": {"type": "canary", "params": {"primary": "stable", "canary": "next", "percent": 50,
                                                    "min_requests": 10, "max_error_rate": 0.05}}})
        assert r.status_code == 200, r.text
        for i in range(30):
            r = await http.post(f"{router}/v1/endpoints/{endpoint}/predict",
                                json={"unit_id": f"u{i}", "features": {"x": 0.3}})
            assert r.status_code == 200 and r.json()["variant"] == "stable", r.text

        async def rolled_back():  # type: ignore[no-untyped-def]
            state = (await http.get(f"{router}/v1/endpoints/{endpoint}")).json()
            return state["status"] == "rolled_back" and state

        state = await _poll("the canary rollback", rolled_back)
        event = state["events"][-1]
        assert event["details"]["rule"] == "error_rate" and event["details"]["variant"] == "next"
        stable, nxt = state["variants"]
        assert (stable["role"], nxt["role"]) == ("live", "paused") and nxt["errors"] >= 10 and nxt["decisions"] == 0

    def rollback_audited(records: list) -> bool:
        return any(f"{endpoint}/next".encode() in rec.value for rec in records)

    records = await read_until(stack.kafka, topics.AUDIT_LOG, rollback_audited, timeout_s=30)
    audit = [events_pb2.AuditRecord.FromString(rec.value) for rec in records]
    mine = [a for a in audit if a.target == f"{endpoint}/next"]
    assert mine and mine[0].action == "rollback" and "error rate" in mine[0].reason


async def test_shadow_predictions_are_logged_and_grpc_reports_the_state(stack: Stack, model: str) -> None:
    endpoint = f"rp-shadow-{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(stack.grpc("bandit-router")) as channel:
        stub = bandit_router_pb2_grpc.BanditRouterServiceStub(channel)
        spec = pb.EndpointSpec(endpoint=endpoint, variants=[
            pb.Variant(name="live", model=model, alias="production", weight=1.0),
            pb.Variant(name="next", model=model, version="2", weight=1.0)],
            policy=pb.Policy(type="shadow"))
        spec.policy.params.update({"primary": "live"})
        stored = await stub.PutEndpoint(spec)
        assert stored.endpoint == endpoint and stored.policy.type == "shadow"
        listed = await stub.ListEndpoints(pb.ListEndpointsRequest())
        assert endpoint in [e.endpoint for e in listed.endpoints]
        answers = []
        for i in range(5):
            request = pb.PredictRequest(endpoint=endpoint, unit_id=f"u{i}")
            request.features.update({"x": -0.5 + i * 0.25})
            answers.append(await stub.Predict(request))
        assert {(a.variant, a.version) for a in answers} == {("live", "1")}

        async def mirrored():  # type: ignore[no-untyped-def]
            state = await stub.GetEndpoint(pb.GetEndpointRequest(endpoint=endpoint))
            return state.variants[1].decisions == 0 and state if await _shadows(stack, endpoint) >= 5 else None

        state = await _poll("the shadow predictions", mirrored)
        live, nxt = state.variants
        assert (live.alias, live.weight, live.decisions, live.traffic_share) == ("production", 1.0, 5, 1.0)
        assert (nxt.version, nxt.decisions, nxt.traffic_share) == ("2", 0, 0.0)
        assert math.isnan(live.prob_best) and math.isnan(live.regret)  # no rewards yet: undefined

    records = await read_until(stack.kafka, topics.PREDICTIONS,
                               lambda rs: sum(endpoint.encode() in r.value for r in rs) >= 10, timeout_s=30)
    mine = [(r.key.decode(), events_pb2.Prediction.FromString(r.value))
            for r in records if endpoint.encode() in r.value]
    shadows = [(k, p) for k, p in mine if p.shadow]
    assert len(shadows) == 5 and {k for k, _ in shadows} == {f"{model}:2"}
    assert {p.prediction_id for _, p in shadows} == {f"{a.prediction_id}.next" for a in answers}
    assert {k for k, p in mine if not p.shadow} == {f"{model}:1"}


async def _shadows(stack: Stack, endpoint: str) -> int:
    async with httpx.AsyncClient(timeout=30) as http:
        state = (await http.get(stack.url("bandit-router", f"/v1/endpoints/{endpoint}"))).json()
    return int(state["variants"][1]["shadows"])


async def _poll(what: str, check, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def test_the_cli_puts_lists_and_shows_endpoints(stack: Stack, model: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    endpoint = f"rp-cli-{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"variants": [{"name": "a", "model": model, "version": "1"},
                                             {"name": "b", "model": model, "version": "2"}],
                                "policy": {"type": "sticky"}}))
    put = stack.mlops("endpoints", "put", endpoint, str(spec))
    assert json.loads(put.stdout)["policy"]["type"] == "sticky"
    listed = json.loads(stack.mlops("endpoints", "list", "--json").stdout)["endpoints"]
    assert endpoint in {e["endpoint"] for e in listed}
    for i in range(6):
        r = httpx.post(stack.url("bandit-router", f"/v1/endpoints/{endpoint}/predict"),
                       json={"unit_id": "same-user", "features": {"x": 0.1 * i}}, timeout=30)
        assert r.status_code == 200, r.text
    wide = {**stack.env, "COLUMNS": "250"}  # rich wraps cells to the terminal; make it wide enough to search
    shown = subprocess.run([sys.executable, "-m", "mlops.cli.main", "endpoints", "show", endpoint], env=wide,
                           text=True, capture_output=True, check=True, timeout=120).stdout
    assert "sticky" in shown and "created" in shown and f"{model}:1" in shown and f"{model}:2" in shown
    state = json.loads(stack.mlops("endpoints", "show", endpoint, "--json").stdout)
    assert sorted(v["decisions"] for v in state["variants"]) == [0, 6]  # one user, one arm
    missing = stack.mlops("endpoints", "show", f"{endpoint}-nope", check=False)
    assert missing.returncode == 1 and "404" in missing.stdout
