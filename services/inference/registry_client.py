"""The inference service's view of the registry over gRPC: which versions should serve, and their bytes."""

from __future__ import annotations

import hashlib

import grpc

from mlops.errors import Conflict
from mlops.v1 import registry_pb2, registry_pb2_grpc


class RegistryClient:
    """ListModelVersions and GetArtifact (with the sha256 checked here too, not only by the registry)."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 30.0) -> None:
        self._stub = registry_pb2_grpc.RegistryServiceStub(channel)
        self._timeout = timeout_s

    async def serving_versions(self, stages: tuple[str, ...]) -> list[registry_pb2.ModelVersion]:
        response = await self._stub.ListModelVersions(
            registry_pb2.ListModelVersionsRequest(stages=list(stages)), timeout=self._timeout
        )
        return [v for v in response.versions if v.stage in stages]

    async def artifact(self, version: registry_pb2.ModelVersion) -> bytes:
        """The artifact's bytes, verified against ``version.artifact_sha256``."""
        ref = registry_pb2.ModelVersionRef(model=version.model, version=version.version)
        chunks: list[bytes] = []
        async for chunk in self._stub.GetArtifact(ref, timeout=self._timeout):
            chunks.append(chunk.data)
        data = b"".join(chunks)
        digest = hashlib.sha256(data).hexdigest()
        if version.artifact_sha256 and digest != version.artifact_sha256:
            raise Conflict(
                f"artifact of {version.model}:{version.version} has sha256 {digest}, "
                f"registry says {version.artifact_sha256}"
            )
        return data
