"""A tiny TorchScript classifier registered straight through the registry's gRPC API, for tests that need
a served model without training one."""

from __future__ import annotations

import io
import platform
import subprocess
from pathlib import Path

import grpc
import torch

from mlops.v1 import registry_pb2, registry_pb2_grpc


class _Toy(torch.nn.Module):
    def __init__(self, n_features: int, bias: float) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(n_features, 2)
        with torch.no_grad():
            self.linear.weight.fill_(0.5)
            self.linear.weight[0].fill_(-0.5)
            self.linear.bias.fill_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=1)


def torchscript_bytes(n_features: int = 2, bias: float = 0.0) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(_Toy(n_features, bias)), buf)
    return buf.getvalue()


def _run_info(model: str) -> registry_pb2.RunInfo:
    """A complete run record: the registry refuses a version without its lineage and environment."""
    root = Path(__file__).resolve().parents[2]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    return registry_pb2.RunInfo(
        experiment=f"{model}-tests", params={"kind": "toy"}, metrics={"accuracy": 1.0}, seed=0,
        dataset_id="ds-toy-fixture", git_commit=commit or "0" * 40, git_dirty=False,
        python_version=platform.python_version(), hardware="cpu", pip_freeze="torch==2.13.0",
        tags={"mlops.definitions_hash": "toy"},
    )


def register(grpc_address: str, model: str, features: list[str], stage: str = "production",
             bias: float = 0.0, metadata: tuple[tuple[str, str], ...] = ()) -> registry_pb2.ModelVersion:
    with grpc.insecure_channel(grpc_address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        return stub.RegisterModelVersion(registry_pb2.RegisterModelVersionRequest(
            model=model,
            run=_run_info(model),
            artifact=torchscript_bytes(len(features), bias),
            artifact_format="torchscript",
            signature=registry_pb2.ModelSignature(features=features, input_name="input", output_name="output",
                                                  classes=["0", "1"]),
            stage=stage,
            reason="registered by a test",
        ), timeout=30, metadata=metadata or None)


def wait_ready(inference_http: str, model: str, version: str, timeout_s: float = 60.0) -> None:
    """Block until inference reports the version ready, asking with an unmodified tritonclient.

    tritonclient.http runs on gevent, whose hub belongs to one thread: create and use the client in the
    same thread (call this whole function through ``asyncio.to_thread``)."""
    import time

    import tritonclient.http as triton_http

    client = triton_http.InferenceServerClient(url=inference_http.removeprefix("http://"))
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if client.is_model_ready(model, version):
            return
        time.sleep(0.25)
    raise AssertionError(f"inference never loaded {model} v{version}")
