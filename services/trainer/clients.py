"""The trainer's peers: the feature service (datasets, gRPC) and the registry (versions over gRPC; runs
over REST, because the registry's gRPC API has no run-tracking calls yet).

Calls are retried while the peer is unavailable (it may be starting); other errors surface at once
as :class:`PeerError` with the peer's own message, which becomes the job's error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import httpx

from mlops.auth.local import service_headers
from mlops.grpc_util import ON_BEHALF_OF_METADATA, channel
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

    async def build_dataset(
        self, stream: str, features: list[str], label: str, last_n: int = 0
    ) -> feature_pb2.DatasetVersion:
        request = feature_pb2.BuildDatasetRequest(stream=stream, features=features, label=label, last_n=last_n)
        return await _call(
            "feature",
            "BuildDataset",
            lambda: self._stub.BuildDataset(request, timeout=self._timeout),
            self._attempts,
        )

    async def get_dataset(self, dataset_id: str) -> feature_pb2.DatasetVersion:
        request = feature_pb2.GetDatasetRequest(id=dataset_id)
        return await _call(
            "feature", "GetDataset", lambda: self._stub.GetDataset(request, timeout=self._timeout), self._attempts
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

    async def register(
        self, request: registry_pb2.RegisterModelVersionRequest, on_behalf_of: str = ""
    ) -> registry_pb2.ModelVersion:
        """Register with the trainer's own token, declaring whom for (the requester's token id: the audit
        trail records it beside the trainer's). Safe to retry: the request carries an idempotency key, so a
        retry returns the same version."""
        metadata = (*ACTOR, (ON_BEHALF_OF_METADATA, on_behalf_of)) if on_behalf_of else ACTOR
        return await _call(
            "registry",
            "RegisterModelVersion",
            lambda: self._stub.RegisterModelVersion(request, timeout=self._timeout, metadata=metadata),
            self._attempts,
        )

    async def resolve_alias(self, model: str, alias: str) -> registry_pb2.ModelVersion | None:
        """The version an alias names, or None when the model or the alias names none."""
        request = registry_pb2.ResolveAliasRequest(model=model, alias=alias)
        try:
            return await _call(
                "registry", "ResolveAlias", lambda: self._stub.ResolveAlias(request, timeout=self._timeout),
                self._attempts,
            )
        except PeerError as exc:
            if isinstance(exc.__cause__, grpc.aio.AioRpcError) and exc.__cause__.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    async def artifact(self, version: registry_pb2.ModelVersion) -> bytes:
        """A version's artifact, checked here against its sha256 too."""
        ref = registry_pb2.ModelVersionRef(model=version.model, version=version.version)

        async def read() -> bytes:
            return b"".join([c.data async for c in self._stub.GetArtifact(ref, timeout=self._timeout)])

        data = await _call("registry", "GetArtifact", read, self._attempts)
        if hashlib.sha256(data).hexdigest() != version.artifact_sha256:
            raise PeerError(f"registry GetArtifact: {version.model} v{version.version} does not match its sha256")
        return data

    async def close(self) -> None:
        await self._channel.close()


class RunTracker:
    """The registry's run-tracking REST API: start a run, log metrics, set its status, gates and files."""

    def __init__(self, base_url: str, timeout_s: float, attempts: int) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, headers=service_headers())
        self._attempts = attempts

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(1, self._attempts + 1):
            try:
                resp = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt < self._attempts:
                    log.warning("registry %s %s: %r (attempt %d); retrying", method, path, exc, attempt)
                    await asyncio.sleep(0.5 * 2**attempt)
                    continue
                raise PeerError(f"registry {method} {path} failed: {exc!r}") from exc
            if resp.status_code == 503 and attempt < self._attempts:
                await asyncio.sleep(0.5 * 2**attempt)
                continue
            if resp.status_code >= 400:
                raise PeerError(f"registry {method} {path} failed: {resp.status_code}: {resp.text[:500]}")
            return resp.json()
        raise AssertionError("unreachable")

    async def start(self, run: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", "/v1/runs", json=run)

    async def log_metrics(self, run_id: str, points: list[dict[str, float]]) -> None:
        await self._request("POST", f"/v1/runs/{run_id}/metrics", json={"metrics": points})

    async def update(self, run_id: str, **fields: Any) -> dict[str, Any]:
        return await self._request("PATCH", f"/v1/runs/{run_id}", json=fields)

    async def get(self, run_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/v1/runs/{run_id}")

    async def put_file(self, run_id: str, name: str, data: bytes) -> dict[str, Any]:
        return await self._request("PUT", f"/v1/runs/{run_id}/files/{name}", content=data,
                                   headers={"content-type": "application/octet-stream"})

    async def close(self) -> None:
        await self._http.aclose()
