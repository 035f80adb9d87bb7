"""The Triton backend: the exported repository layout and config.pbtxt, and forward passes through a V2
gRPC server standing in for Triton (this service's own V2 servicer reading the exported repository, as
Triton in poll mode would; it has no repository API, so the backend waits for the version to be ready)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from tritonclient.grpc import service_pb2_grpc

from mlops.v1 import registry_pb2
from services.inference import grpc_api
from services.inference.core import DataPlane
from services.inference.registry_client import LocalSource
from services.inference.repository import ModelRepository
from services.inference.settings import InferenceSettings
from services.inference.triton import TritonBackend, config_pbtxt, export, triton_name, triton_version

# Below the ephemeral range; MLOPS_TEST_PORT_BASE keeps parallel sessions apart.
PORT = int(os.environ.get("MLOPS_TEST_PORT_BASE", "28100")) + 960


def artifact() -> bytes:
    torch.manual_seed(3)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(-1))), buf)
    return buf.getvalue()


def version(model: str, number: str, data: bytes) -> registry_pb2.ModelVersion:
    return registry_pb2.ModelVersion(
        model=model, version=number, stage="production", artifact_format="torchscript",
        artifact_sha256=hashlib.sha256(data).hexdigest(),
        signature=registry_pb2.ModelSignature(features=["a", "b", "c"], input_name="input", output_name="output"))


def test_names_versions_and_config() -> None:
    assert triton_name("loan approval/v2") == "loan_approval_v2"
    assert triton_version("007") == "7"
    with pytest.raises(Exception, match="positive integers"):
        triton_version("blue")
    text = config_pbtxt("m", 3, max_batch_size=256, max_queue_delay_us=500)
    assert 'platform: "pytorch_libtorch"' in text and "max_batch_size: 256" in text
    assert 'name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3 ]' in text
    assert "dynamic_batching { max_queue_delay_microseconds: 500 }" in text


def test_export_layout(tmp_path: Path) -> None:
    data = artifact()
    assert export(tmp_path, version("m", "2", data), data, max_batch_size=64, max_queue_delay_us=100) == ("m", "2")
    assert (tmp_path / "m" / "2" / "model.pt").read_bytes() == data
    assert "max_queue_delay_microseconds: 100" in (tmp_path / "m" / "config.pbtxt").read_text()
    assert not list(tmp_path.rglob("*.tmp"))


class OneVersion:
    def __init__(self, mv: registry_pb2.ModelVersion, data: bytes) -> None:
        self.mv, self.data = mv, data

    async def serving_versions(self, stages: tuple[str, ...]) -> list[registry_pb2.ModelVersion]:
        return [self.mv]

    async def artifact(self, mv: registry_pb2.ModelVersion) -> bytes:
        return self.data


async def test_forward_passes_go_to_triton(tmp_path: Path) -> None:
    root = tmp_path / "triton-models"
    root.mkdir()
    # The stand-in for Triton: serves whatever appears in the repository, rescanning it often.
    fake_repo = ModelRepository(LocalSource(root), InferenceSettings(resync_interval_s=0.1, optimize=False))
    fake_sync = asyncio.create_task(fake_repo.run())
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(grpc_api.InferenceServicer(DataPlane(fake_repo)),
                                                               server)
    server.add_insecure_port(f"127.0.0.1:{PORT}")
    await server.start()

    data = artifact()
    backend = TritonBackend(f"127.0.0.1:{PORT}", root, load_timeout_s=60)
    repo = ModelRepository(OneVersion(version("m", "4", data), data), InferenceSettings(), triton=backend)
    try:
        await repo.sync()
        loaded = repo.get("m")
        assert loaded.runtime.device == f"triton:127.0.0.1:{PORT}" and loaded.n_outputs == 2
        x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
        local = torch.jit.load(io.BytesIO(data))
        with torch.no_grad():
            want = local(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(await loaded.batcher.submit(x), want, rtol=1e-5)
        assert fake_repo.get("m", "4").input_name == "INPUT__0"
    finally:
        await repo.close()
        await asyncio.to_thread(repo.get("m").runtime.close)
        await server.stop(None)
        await fake_repo.close()
        fake_sync.cancel()
    assert not (root / "m" / "4").exists()
