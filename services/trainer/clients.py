"""The trainer's peers over gRPC: the feature service (datasets) and the registry (registration).

Calls are retried while the peer is unavailable (it may be starting); other errors surface at once
as :class:`PeerError` with the peer's own message, which becomes the job's error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from mlops.grpc_util import channel
from mlops.v1 import feature_pb2, feature_pb2_grpc, registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")
ACTOR = (("x-mlops-actor", "trainer"),)
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class PeerError(Exception):
    """A call to another service failed; ``str()`` says which, with its status and message."""


async def _call(peer: str, what: str, fn: Callable[[], Awaitable[T]], attempts: int) -> T:
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _RETRYABLE and attempt < attempts:
                log.warning("%s %s: %s (attempt %d); retrying", peer, what, exc.code().name, attempt)
                await asyncio.sleep(0.5 * 2**attempt)
                continue
            raise PeerError(f"{peer} {what} failed: {exc.code().name}: {exc.details()}") from exc
    raise AssertionError("unreachable")


class FeatureClient:
    def __init__(self, address: str, timeout_s: float, attempts: int) -> None:
        self._channel = channel(address)
        self._stub = feature_pb2_grpc.FeatureServiceStub(self._channel)
        self._timeout = timeout_s
        self._attempts = attempts

    async def build_dataset(self, stream: str, features: list[str], label: str) -> feature_pb2.DatasetVersion:
        request = feature_pb2.BuildDatasetRequest(stream=stream, features=features, label=label)
        return await _call(
            "feature",
            "BuildDataset",
            lambda: self._stub.BuildDataset(request, timeout=self._timeout),
            self._attempts,
        )

    async def read_dataset(self, dataset_id: str) -> bytes:
        async def read() -> bytes:
            parts = []
            async for chunk in self._stub.ReadDataset(
                feature_pb2.GetDatasetRequest(id=dataset_id), timeout=self._timeout
            ):
                parts.append(chunk.data)
            return b"".join(parts)

        return await _call("feature", "ReadDataset", read, self._attempts)

    async def close(self) -> None:
        await self._channel.close()


class RegistryClient:
    def __init__(self, address: str, timeout_s: float, attempts: int) -> None:
        self._channel = channel(address)
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self._timeout = timeout_s
        self._attempts = attempts

    async def register(self, request: registry_pb2.RegisterModelVersionRequest) -> registry_pb2.ModelVersion:
        # Safe to retry: the request carries an idempotency key, so a retry returns the same version.
        return await _call(
            "registry",
            "RegisterModelVersion",
            lambda: self._stub.RegisterModelVersion(request, timeout=self._timeout, metadata=ACTOR),
            self._attempts,
        )

    async def close(self) -> None:
        await self._channel.close()
