"""Helpers shared by the inference integration tests (no tests here): a TorchScript model whose outputs say
which version answered, registered straight through the registry's gRPC API, and auth headers.

The model: ``[x @ w, tag]`` per row, with ``w = [1, 2, ..., F]``, so every row's answer is checkable and the
second output names the version (``tag``)."""

from __future__ import annotations

import asyncio
import io
import os
import platform
import time
from collections.abc import Callable

import grpc
import numpy as np
import torch
import tritonclient.grpc.aio as tgrpc_aio

from mlops.v1 import registry_pb2, registry_pb2_grpc

FEATURES = ["a", "b", "c", "d"]


class Tagged(torch.nn.Module):
    def __init__(self, n_features: int, tag: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.arange(1, n_features + 1, dtype=torch.float32).unsqueeze(1),
                                         requires_grad=False)
        self.tag = tag

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x @ self.weight, torch.full((x.shape[0], 1), self.tag)], dim=1)


def artifact(tag: float, n_features: int = len(FEATURES)) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Tagged(n_features, tag)), buf)
    return buf.getvalue()


def expected(x: np.ndarray, tag: float) -> np.ndarray:
    w = np.arange(1, x.shape[1] + 1, dtype=np.float32)
    return np.stack([x @ w, np.full(x.shape[0], tag, dtype=np.float32)], axis=1)


def token() -> str | None:
    """The stack's service token (auth is on in the test stack), if any."""
    return os.environ.get("MLOPS_SERVICE_TOKEN")


def headers() -> dict[str, str]:
    t = token()
    return {"authorization": f"Bearer {t}"} if t else {}


def metadata() -> list[tuple[str, str]]:
    return list(headers().items())


def register(address: str, model: str, tag: float, stage: str = "production",
             features: list[str] | None = None) -> registry_pb2.ModelVersion:
    """Register a :class:`Tagged` model version through the registry's gRPC API."""
    feats = features or FEATURES
    with grpc.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        return stub.RegisterModelVersion(registry_pb2.RegisterModelVersionRequest(
            model=model,
            run=registry_pb2.RunInfo(experiment=f"{model}-tests", params={"tag": str(tag)}, seed=0,
                                     dataset_id="ds-inference-tests", git_commit="0" * 40,
                                     python_version=platform.python_version(), hardware="cpu"),
            artifact=artifact(tag, len(feats)),
            artifact_format="torchscript",
            signature=registry_pb2.ModelSignature(features=feats, input_name="input", output_name="output",
                                                  classes=["score", "tag"]),
            stage=stage,
            reason="registered by an inference test",
        ), timeout=30, metadata=metadata())


def set_stage(address: str, model: str, version: str, stage: str) -> registry_pb2.ModelVersion:
    with grpc.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        return stub.SetStage(registry_pb2.SetStageRequest(model=model, version=version, stage=stage,
                                                          reason="promoted by an inference test"),
                             timeout=30, metadata=metadata())


async def ready(client: tgrpc_aio.InferenceServerClient, model: str, version: str) -> None:
    """Until inference has ``model:version`` loaded (over gRPC ModelReady)."""
    for _ in range(600):
        if await client.is_model_ready(model, version, headers=headers()):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"inference did not load {model}:{version}")


def wait_for(what: str, check: Callable[[], object], timeout_s: float = 90.0) -> object:
    """Poll ``check`` until it returns something truthy (not a timing assertion: a bound on waiting)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # not there yet (404, loading)
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
