"""A promotion under load, against the real stack: while clients send unversioned requests without pause,
new versions are promoted through the registry (``SetStage production``); no request fails, and every
request sent after the first answer from the new version is answered by the new version.

Two promotions: one of a version inference has not loaded (registered archived, so inference loads it
during the rollout while the old version keeps serving), one of a candidate it already serves."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import numpy as np
import pytest
import tritonclient.grpc.aio as tgrpc_aio
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from tests.integration.inference_support import FEATURES, expected, headers, ready, register, set_stage
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

CLIENTS = 4
AFTER_SWITCH = 150  # answers to collect from a new version before the next step


@dataclass
class Answer:
    sent: float
    received: float
    version: str


class Load:
    """Clients sending unversioned requests back to back; every answer is checked row by row."""

    def __init__(self, client: tgrpc_aio.InferenceServerClient, model: str, tags: dict[str, float]) -> None:
        self.client, self.model, self.tags = client, model, tags
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(CLIENTS)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _client(self, i: int) -> None:
        loop = asyncio.get_running_loop()
        x = np.random.default_rng(i).standard_normal((1 + i % 3, len(FEATURES))).astype(np.float32)
        inp = InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        while not self._stop.is_set():
            sent = loop.time()
            try:
                result = await self.client.infer(self.model, [inp], headers=headers(), client_timeout=30)
            except InferenceServerException as exc:
                self.errors.append(f"{exc.status()}: {exc.message()}")
                continue
            version = result.get_response().model_version
            got = result.as_numpy("output")
            if version not in self.tags or not np.allclose(got, expected(x, self.tags[version]), rtol=1e-5):
                self.errors.append(f"version {version} answered {got.tolist()} for {x.tolist()}")
            self.answers.append(Answer(sent, loop.time(), version))

    async def until(self, what: str, done, timeout_s: float = 120.0) -> None:  # type: ignore[no-untyped-def]
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not done():
            assert not self.errors, self.errors[:5]
            assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    def after_first(self, version: str) -> list[Answer]:
        first = min(a.received for a in self.answers if a.version == version)
        return [a for a in self.answers if a.sent > first]


async def test_promotions_under_load_fail_no_request(stack: Stack) -> None:
    registry = stack.grpc("registry")
    model = f"roll-{uuid.uuid4().hex[:8]}"
    v1 = (await asyncio.to_thread(register, registry, model, 1.0, "production")).version
    client = tgrpc_aio.InferenceServerClient(stack.grpc("inference"))
    tags = {v1: 1.0}
    load = Load(client, model, tags)
    try:
        await ready(client, model, v1)
        load.start()
        await load.until("answers from v1", lambda: len(load.answers) >= 50)

        # 1. A version inference has not loaded: it loads during the rollout, v1 serves meanwhile.
        v2 = (await asyncio.to_thread(register, registry, model, 2.0, "archived")).version
        tags[v2] = 2.0
        await asyncio.to_thread(set_stage, registry, model, v2, "production")
        await load.until("v2 to take over", lambda: any(a.version == v2 for a in load.answers)
                         and len(load.after_first(v2)) >= AFTER_SWITCH)

        # 2. A candidate inference already serves: the switch is the stage change itself.
        v3 = (await asyncio.to_thread(register, registry, model, 3.0, "candidate")).version
        tags[v3] = 3.0
        await ready(client, model, v3)
        promoted_v3_at = asyncio.get_running_loop().time()
        await asyncio.to_thread(set_stage, registry, model, v3, "production")
        await load.until("v3 to take over", lambda: any(a.version == v3 for a in load.answers)
                         and len(load.after_first(v3)) >= AFTER_SWITCH)
    finally:
        await load.stop()
        await client.close()

    assert load.errors == []
    assert {a.version for a in load.answers} == {v1, v2, v3}
    after_v2 = [a for a in load.after_first(v2) if a.sent < promoted_v3_at]
    assert after_v2 and {a.version for a in after_v2} == {v2}
    assert {a.version for a in load.after_first(v3)} == {v3}
    # No request sent after a version's first answer went back to an older version.
    for newer in (v2, v3):
        assert all(int(a.version) >= int(newer) for a in load.after_first(newer))
