"""The bandit router on the real stack, with a second router process beside the stack's: predictions
through both replicas, feedback posted to the feedback service, rewards back at the routers moving the
shared posterior; a new registry candidate becomes an arm by itself (models.lifecycle), wins, and is
promoted in the registry with an audit record -- the closed loop's last step."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mlops.bus import topics
from mlops.v1 import events_pb2
from tests.integration.kafka_util import read_until
from tests.integration.stack import PORT_BASE, Stack
from tests.integration.toy_model import register, wait_ready

pytestmark = pytest.mark.integration

#: The second router's ports: inside this session's port block, clear of the stack's own.
SECOND_HTTP, SECOND_GRPC = PORT_BASE + 50, PORT_BASE + 51


@pytest.fixture(scope="module")
def second_router(stack: Stack) -> Iterator[str]:
    """Another replica of the bandit router, on the same broker and Redis as the stack's one."""
    env = {**os.environ, **stack.env, "MLOPS_BANDIT_ROUTER_HTTP_PORT": str(SECOND_HTTP),
           "MLOPS_BANDIT_ROUTER_GRPC_PORT": str(SECOND_GRPC)}
    log_path = stack.home / "logs" / "bandit-router-2.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.bandit_router"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{SECOND_HTTP}"
    try:
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, f"second router exited:\n{log_path.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, f"second router not ready:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def _poll(what: str, check: Any, timeout_s: float = 90.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


async def test_feedback_moves_the_shared_bandit_and_the_winner_is_promoted(stack: Stack, second_router: str) -> None:
    model, endpoint = f"rb-{uuid.uuid4().hex[:8]}", f"rb-{uuid.uuid4().hex[:8]}"
    first = stack.url("bandit-router")
    routers = [first, second_router]
    # v1 (production) decides on a feature unrelated to the label: right half of the time.
    v1 = await asyncio.to_thread(register, stack.grpc("registry"), model, ["y"], "production")
    await asyncio.to_thread(wait_ready, stack.url("inference"), model, v1.version)
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.put(f"{first}/v1/endpoints/{endpoint}", json={
            "variants": [{"name": "primary", "model": model, "alias": "production"}],
            "policy": {"type": "thompson", "params": {"auto_candidates": True, "min_samples": 15,
                                                      "promote_threshold": 0.95}}})
        assert r.status_code == 200, r.text

        # v2 (a candidate, as the trainer registers a retrained model) decides on the label's feature.
        v2 = await asyncio.to_thread(register, stack.grpc("registry"), model, ["x"], "candidate")
        await asyncio.to_thread(wait_ready, stack.url("inference"), model, v2.version)

        async def arm_added() -> Any:  # read through the other replica: one shared spec
            state = (await http.get(f"{second_router}/v1/endpoints/{endpoint}")).json()
            return [v["name"] for v in state["variants"]] == ["primary", f"v{v2.version}"] and state

        state = await _poll("the candidate to become an arm", arm_added)
        assert state["events"][-1]["kind"] == "arm_added" and state["events"][-1]["details"]["version"] == v2.version

        rng = random.Random(5)
        served: dict[str, int] = {}
        by_router = [0, 0]
        for round_ in range(30):
            batch = []
            for i in range(10):
                x, y = rng.uniform(-1, 1), rng.uniform(-1, 1)
                k = (round_ + i) % 2
                r = await http.post(f"{routers[k]}/v1/endpoints/{endpoint}/predict",
                                    json={"unit_id": f"u{round_}-{i}", "features": {"x": x, "y": y}})
                assert r.status_code == 200, r.text
                pred = r.json()
                served[pred["variant"]] = served.get(pred["variant"], 0) + 1
                by_router[k] += 1
                batch.append({"prediction_id": pred["prediction_id"], "label": int(x > 0)})
            r = await http.post(stack.url("feedback", "/v1/feedback"), json=batch)
            assert r.status_code == 202, r.text
            state = (await http.get(f"{first}/v1/endpoints/{endpoint}")).json()
            if state["status"] == "promoted":
                break
            await asyncio.sleep(0.5)

        async def promoted() -> Any:
            s = (await http.get(f"{second_router}/v1/endpoints/{endpoint}")).json()
            return s["status"] == "promoted" and s

        final = await _poll("the promotion", promoted)
        assert by_router[0] > 0 and by_router[1] > 0 and served.get("primary", 0) >= 15
        event = final["events"][-1]
        assert event["kind"] == "promoted" and (event["details"]["model"], event["details"]["version"]) == (
            model, v2.version)
        # The promotion is decided from the rewards the routers received: the per-arm counts and means in
        # its record show the feedback reached them and moved the posterior. (Polling for an in-between
        # state with rewards on every arm raced the promotion when rewards arrived in one burst under load.)
        arms = event["details"]["arms"]
        assert arms["primary"]["rewards"] >= 15 and arms[f"v{v2.version}"]["rewards"] >= 15
        assert arms[f"v{v2.version}"]["mean"] > arms["primary"]["mean"]
        assert event["details"]["prob_best"] >= 0.95
        assert [v["name"] for v in final["variants"]] == [f"v{v2.version}"]
        # Both replicas report the same state: one set of statistics, in Redis. Rewards of decisions still
        # pending keep arriving after the promotion, so the two are read back to back until no reward
        # lands between the reads (two reads apart in time could differ by one reward, not by a replica).
        async def same_state() -> Any:
            a = (await http.get(f"{second_router}/v1/endpoints/{endpoint}")).json()
            b = (await http.get(f"{first}/v1/endpoints/{endpoint}")).json()
            return a["variants"] == b["variants"] and a["events"] == b["events"] and (a, b)

        agreed, _ = await _poll("both replicas to report the same state", same_state)
        assert agreed["events"][:len(final["events"])] == final["events"]

        # The registry made it so: v2 is production, v1 archived.
        async def stage(version: str) -> str:
            r = await http.get(stack.url("registry", f"/v1/models/{model}/versions/{version}"))
            return r.json()["stage"]

        assert await stage(v2.version) == "production" and await stage(v1.version) == "archived"

        # And new requests, through either replica, go to the winner.
        async def winner_serves() -> bool:
            outs = [(await http.post(f"{u}/v1/endpoints/{endpoint}/predict",
                                     json={"features": {"x": 0.5, "y": 0.5}})).json() for u in routers]
            return all(o.get("version") == v2.version for o in outs)

        await _poll("the winner to take every request", winner_serves, timeout_s=30)

    def audit_seen(records: list) -> bool:
        return any(f"{model}:{v2.version}".encode() in rec.value for rec in records)

    audit = await read_until(stack.kafka, topics.AUDIT_LOG, audit_seen, timeout_s=30)
    records = [events_pb2.AuditRecord.FromString(rec.value) for rec in audit]
    mine = [a for a in records if a.target == f"{model}:{v2.version}"]
    assert mine and (mine[0].actor, mine[0].action) == ("bandit-router", "promote") and endpoint in mine[0].reason

    # Predictions are keyed by model:version (one partition per version for the drift service).
    def all_keyed(records: list) -> bool:
        return sum(1 for rec in records if endpoint.encode() in rec.value) >= sum(served.values())

    predictions = await read_until(stack.kafka, topics.PREDICTIONS, all_keyed, timeout_s=30)
    keys = {rec.key.decode() for rec in predictions if endpoint.encode() in rec.value}
    assert keys == {f"{model}:{v1.version}", f"{model}:{v2.version}"}
