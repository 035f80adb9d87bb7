"""Scale-out: a second feature replica joins the stack's consumer group, the two split the partitions of
``events.validated``, one is killed with -9 while events flow, and the other takes its partitions over:
every event is applied exactly once, and both replicas serve the same online features."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from typing import IO

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.stack import PORT_BASE, Stack

pytestmark = pytest.mark.integration

N = 2000
ENTITIES = 40
HTTP, GRPC = PORT_BASE + 501, PORT_BASE + 1501  # the extra replica's ports, inside this session's range


async def _total(http: httpx.AsyncClient, url: str, entities: list[str]) -> int:
    r = await http.post(url, json={"entities": entities, "features": ["event_count"]})
    r.raise_for_status()
    return int(sum(row["values"]["event_count"] or 0 for row in r.json()["rows"]))


def _start_replica(stack: Stack, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {**stack.env, "MLOPS_FEATURE_HTTP_PORT": str(HTTP), "MLOPS_FEATURE_GRPC_PORT": str(GRPC)}
    return subprocess.Popen([sys.executable, "-m", "services.feature"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


async def _consumed(http: httpx.AsyncClient, url: str) -> float:
    text = (await http.get(url)).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "mlops_records_consumed_total" and s.labels.get("topic") == "events.validated")


async def test_two_replicas_split_the_partitions_and_one_takes_over(stack: Stack) -> None:
    log = (stack.home / "logs" / "feature-replica.log").open("ab")
    replica = _start_replica(stack, log)
    run = uuid.uuid4().hex[:8]
    stream = f"scale{run}"
    entities = [f"{run}-e{i}" for i in range(ENTITIES)]
    replica_url = f"http://127.0.0.1:{HTTP}/v1/features/online"
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(240):
                try:
                    if (await http.get(f"http://127.0.0.1:{HTTP}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.25)
            else:
                raise AssertionError("the second replica never became ready")
            r = await http.put(stack.url("ingest", f"/v1/streams/{stream}/schema"),
                               json={"fields": [{"name": "amount", "type": "float"}]})
            assert r.status_code == 200
            url = stack.url("ingest", f"/v1/streams/{stream}/events")
            metrics = {"stack": stack.url("feature", "/metrics"), "replica": f"http://127.0.0.1:{HTTP}/metrics"}
            before = {k: await _consumed(http, u) for k, u in metrics.items()}
            sent = 0

            async def send(upto: int) -> None:
                nonlocal sent
                r = await http.post(url, json=[{"event_id": f"{run}-{i}", "entity_id": entities[i % ENTITIES],
                                                "amount": 1.0} for i in range(sent, upto)])
                assert r.json()["accepted"] == upto - sent
                sent = upto

            # first part: until both replicas have consumed some of it (the group rebalanced when the
            # replica joined, and they split the partitions)
            for _ in range(240):
                await send(sent + 20)
                await asyncio.sleep(0.25)
                now = {k: await _consumed(http, u) for k, u in metrics.items()}
                if all(now[k] > before[k] for k in metrics):
                    break
            else:
                raise AssertionError(f"the two replicas never both consumed: {before} -> {now}")
            assert sent < N // 2
            await send(N // 2)
            for _ in range(240):
                if await _total(http, replica_url, entities) == N // 2:
                    break
                await asyncio.sleep(0.25)
            assert await _total(http, replica_url, entities) == N // 2
            # kill the stack's own replica with -9 while the second half flows; the extra one takes over
            stack.kill9("feature")
            for upto in range(N // 2 + 100, N + 1, 100):
                await send(upto)
            got = 0
            for _ in range(480):
                got = await _total(http, replica_url, entities)
                if got >= N:
                    break
                await asyncio.sleep(0.25)
            assert got == N
            await asyncio.to_thread(stack.restart, "feature")
            await asyncio.sleep(2.0)
            assert await _total(http, replica_url, entities) == N
            assert await _total(http, stack.url("feature", "/v1/features/online"), entities) == N
    finally:
        os.killpg(replica.pid, signal.SIGTERM)
        try:
            replica.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(replica.pid, signal.SIGKILL)
            replica.wait()
        log.close()
