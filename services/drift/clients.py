"""gRPC clients of the drift service's peers: the registry (a version's stage, for the retraining
policy) and the feedback service (online quality, for quality triggers that read it)."""

from __future__ import annotations

import math
import time

import grpc

from mlops.grpc_util import channel
from mlops.v1 import feedback_pb2, feedback_pb2_grpc, registry_pb2, registry_pb2_grpc


class _Peer:
    def __init__(self, address: str, timeout_s: float) -> None:
        self._address = address
        self.timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = channel(self._address)
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


class RegistryStages(_Peer):
    """``GetModelVersion(...).stage``, cached for ``ttl_s`` (stages change rarely; a stale answer for a few
    seconds only delays a trigger)."""

    def __init__(self, address: str, timeout_s: float = 5.0, ttl_s: float = 5.0) -> None:
        super().__init__(address, timeout_s)
        self._ttl_s = ttl_s
        self._cache: dict[tuple[str, str], tuple[float, str | None]] = {}

    async def __call__(self, model: str, version: str) -> str | None:
        hit = self._cache.get((model, version))
        if hit is not None and time.monotonic() - hit[0] < self._ttl_s:
            return hit[1]
        stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        try:
            got = await stub.GetModelVersion(registry_pb2.ModelVersionRef(model=model, version=version),
                                             timeout=self.timeout_s)
            stage: str | None = got.stage or "none"
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            stage = None
        self._cache[(model, version)] = (time.monotonic(), stage)
        return stage


class FeedbackQuality(_Peer):
    """``GetQuality``: (labelled outcomes, accuracy, log loss); None when nothing was joined yet."""

    async def __call__(self, model: str, version: str) -> tuple[int, float | None, float | None] | None:
        stub = feedback_pb2_grpc.FeedbackServiceStub(self.channel)
        try:
            q = await stub.GetQuality(feedback_pb2.QualityRequest(model=model, version=version),
                                      timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                return None
            raise

        def figure(x: float) -> float | None:
            return x if math.isfinite(x) else None

        # The proto carries joined outcomes, not labelled ones; accuracy is NaN when none were labelled.
        return int(q.outcomes), figure(q.accuracy), figure(q.log_loss)
