"""An answered prediction is never lost by a crash of the router that answered it.

The broker is paused (SIGSTOP) so that every Prediction record the router answers is still waiting in its
outbox when the router is killed with -9; then the broker resumes and the router restarts. Every answered
prediction must reach ``predictions``: the journaled records are republished by the restarted process.
Without the journal the outbox's records die with the process (this test then misses all of them).
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import httpx
import pytest

from mlops.bus import topics
from mlops.stack import procs
from mlops.v1 import events_pb2
from tests.integration.kafka_util import read_until
from tests.integration.stack import Stack
from tests.integration.toy_model import register, wait_ready

pytestmark = pytest.mark.integration

N = 150


def _broker_pid(stack: Stack) -> int:
    broker = procs.load(stack.home).get("broker")
    assert broker is not None and procs.alive(broker), "the stack's broker is not running"
    return broker.pid


async def test_predictions_answered_before_a_kill9_reach_the_log(stack: Stack) -> None:
    model = f"dur-{uuid.uuid4().hex[:8]}"
    endpoint = f"dur-{uuid.uuid4().hex[:8]}"
    version = register(stack.grpc("registry"), model, ["x"], "production")
    await asyncio.to_thread(wait_ready, stack.url("inference"), model, version.version)
    router = stack.url("bandit-router")
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.put(f"{router}/v1/endpoints/{endpoint}", json={
            "variants": [{"name": "only", "model": model, "version": version.version, "weight": 1.0}],
            "policy": {"type": "fixed"}})
        assert r.status_code == 200, r.text
        broker = _broker_pid(stack)
        os.kill(broker, signal.SIGSTOP)
        try:
            answered = []
            for i in range(N):
                r = await http.post(f"{router}/v1/endpoints/{endpoint}/predict",
                                    json={"unit_id": f"u{i}", "features": {"x": i / N}})
                assert r.status_code == 200, r.text
                answered.append(r.json()["prediction_id"])
            stack.kill9("bandit-router")  # every record is still in the outbox: the broker is paused
        finally:
            os.kill(broker, signal.SIGCONT)
    await asyncio.to_thread(stack.restart, "bandit-router")

    wanted = set(answered)

    def logged(records: list) -> set[str]:  # type: ignore[type-arg]
        return {events_pb2.Prediction.FromString(r.value).prediction_id for r in records} & wanted

    records = await read_until(stack.kafka, topics.PREDICTIONS, lambda recs: logged(recs) == wanted,
                               timeout_s=120)
    missing = wanted - logged(records)
    assert not missing, f"{len(missing)} of {N} answered predictions never reached {topics.PREDICTIONS}"
