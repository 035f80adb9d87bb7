"""Where model versions come from: the registry over gRPC (the platform's way), or a local directory of
TorchScript files (a standalone server, used by the benchmark). Both answer the same two questions:
which versions should serve, and their bytes; the repository verifies the bytes against the sha256.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path
from typing import Protocol

import grpc

from mlops.errors import InvalidArgument, NotFound
from mlops.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)


class ModelSource(Protocol):
    """The versions to serve, and their artifacts."""

    async def serving_versions(self, stages: tuple[str, ...]) -> list[registry_pb2.ModelVersion]: ...

    async def artifact(self, version: registry_pb2.ModelVersion) -> bytes: ...


class RegistryClient:
    """ListModelVersions and GetArtifact on the registry."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 30.0) -> None:
        self._stub = registry_pb2_grpc.RegistryServiceStub(channel)
        self._timeout = timeout_s

    async def serving_versions(self, stages: tuple[str, ...]) -> list[registry_pb2.ModelVersion]:
        response = await self._stub.ListModelVersions(
            registry_pb2.ListModelVersionsRequest(stages=list(stages)), timeout=self._timeout
        )
        return [v for v in response.versions if v.stage in stages]

    async def artifact(self, version: registry_pb2.ModelVersion) -> bytes:
        ref = registry_pb2.ModelVersionRef(model=version.model, version=version.version)
        chunks: list[bytes] = []
        async for chunk in self._stub.GetArtifact(ref, timeout=self._timeout):
            chunks.append(chunk.data)
        return b"".join(chunks)


ARTIFACT_FILE = "model.pt"
SIGNATURE_FILE = "signature.json"


class LocalSource:
    """``<root>/<model>/<version>/model.pt`` (TorchScript) with an optional ``<root>/<model>/signature.json``:
    ``{"features": [names] | "n_features": N, "input_name", "output_name", "classes"}``.

    Every version found serves; the highest version of each model is its ``production`` version, the others
    are ``candidate``. The directory is listed again at every resync, so a new version directory is picked
    up without a restart.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._digests: dict[Path, tuple[float, int, str]] = {}

    async def serving_versions(self, stages: tuple[str, ...]) -> list[registry_pb2.ModelVersion]:
        return await asyncio.to_thread(self._scan, stages)

    async def artifact(self, version: registry_pb2.ModelVersion) -> bytes:
        path = self.root / version.model / version.version / ARTIFACT_FILE
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound(f"{path} is gone", field="model_version") from None

    def _scan(self, stages: tuple[str, ...]) -> list[registry_pb2.ModelVersion]:
        if not self.root.is_dir():
            raise NotFound(f"model repository {self.root} is not a directory")
        out: list[registry_pb2.ModelVersion] = []
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            versions = sorted(
                (p for p in model_dir.iterdir() if p.is_dir() and (p / ARTIFACT_FILE).is_file()),
                key=lambda p: (1, int(p.name)) if p.name.isdigit() else (0, p.name),
            )
            if not versions:
                continue
            try:
                signature = self._signature(model_dir)
            except (OSError, ValueError, InvalidArgument) as exc:
                log.error("skipping %s: bad %s: %s", model_dir.name, SIGNATURE_FILE, exc)
                continue
            for i, vdir in enumerate(versions):
                stage = "production" if i == len(versions) - 1 else "candidate"
                if stage not in stages:
                    continue
                out.append(registry_pb2.ModelVersion(
                    model=model_dir.name, version=vdir.name, stage=stage, artifact_format="torchscript",
                    artifact_sha256=self._digest(vdir / ARTIFACT_FILE), signature=signature,
                ))
        return out

    @staticmethod
    def _signature(model_dir: Path) -> registry_pb2.ModelSignature:
        path = model_dir / SIGNATURE_FILE
        if not path.is_file():
            return registry_pb2.ModelSignature(input_name="input", output_name="output")
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise InvalidArgument("must be a JSON object")
        features = [str(f) for f in doc.get("features", [])]
        if not features and doc.get("n_features"):
            features = [f"f{i}" for i in range(int(doc["n_features"]))]
        return registry_pb2.ModelSignature(
            features=features,
            input_name=str(doc.get("input_name", "input")),
            output_name=str(doc.get("output_name", "output")),
            classes=[str(c) for c in doc.get("classes", [])],
        )

    def _digest(self, path: Path) -> str:
        """sha256 of the file, cached by mtime and size (the scan runs at every resync)."""
        stat = path.stat()
        cached = self._digests.get(path)
        if cached and cached[:2] == (stat.st_mtime, stat.st_size):
            return cached[2]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self._digests[path] = (stat.st_mtime, stat.st_size, digest)
        return digest
