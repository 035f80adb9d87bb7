"""The model repository against an in-memory model source: loads, checksums, defaults, per-model batching,
and the rollout rule (an outgoing version serves until its successor is in), plus the local directory source."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import torch

from mlops.errors import NotFound, Unavailable
from mlops.v1 import registry_pb2
from services.inference.registry_client import LocalSource
from services.inference.repository import ModelRepository
from services.inference.settings import InferenceSettings

N_FEATURES = 3


def artifact(scale: float) -> bytes:
    """A model whose outputs say which version answered: ``[sum(x) * scale, scale]`` per row."""

    class Tagged(torch.nn.Module):
        def __init__(self, scale: float) -> None:
            super().__init__()
            self.scale = scale

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x.sum(dim=1, keepdim=True)
            return torch.cat([s * self.scale, torch.full_like(s, self.scale)], dim=1)

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Tagged(scale)), buf)
    return buf.getvalue()


class FakeSource:
    """Versions and artifacts in memory; a version's artifact can be held back by a gate."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], registry_pb2.ModelVersion] = {}
        self.artifacts: dict[tuple[str, str], bytes] = {}
        self.gates: dict[tuple[str, str], asyncio.Event] = {}

    def add(self, model: str, version: str, stage: str, data: bytes, sha256: str | None = None) -> None:
        self.artifacts[(model, version)] = data
        self.versions[(model, version)] = registry_pb2.ModelVersion(
            model=model, version=version, stage=stage, artifact_format="torchscript",
            artifact_sha256=sha256 or hashlib.sha256(data).hexdigest(),
            signature=registry_pb2.ModelSignature(features=["a", "b", "c"], input_name="input", output_name="output"),
        )

    def stage(self, model: str, version: str, stage: str) -> None:
        self.versions[(model, version)].stage = stage

    async def serving_versions(self, stages: tuple[str, ...]) -> list[registry_pb2.ModelVersion]:
        return [v for v in self.versions.values() if v.stage in stages]

    async def artifact(self, version: registry_pb2.ModelVersion) -> bytes:
        gate = self.gates.get((version.model, version.version))
        if gate is not None:
            await gate.wait()
        return self.artifacts[(version.model, version.version)]


@pytest.fixture
async def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
async def repo(source: FakeSource) -> AsyncIterator[ModelRepository]:
    settings = InferenceSettings(models={"big": {"max_batch_size": 1024, "max_queue_delay_us": 10}})
    repository = ModelRepository(source, settings)
    yield repository
    await repository.close()


async def settle(repo: ModelRepository) -> None:
    await asyncio.gather(*list(repo._loading.values()), return_exceptions=True)


async def answer(repo: ModelRepository, model: str, version: str | None = None) -> tuple[str, float]:
    loaded = repo.get(model, version)
    out = await loaded.batcher.submit(np.ones((1, N_FEATURES), dtype=np.float32))
    return loaded.version, float(out[0, 1])


async def test_sync_loads_serving_versions_and_defaults_to_production(repo: ModelRepository,
                                                                      source: FakeSource) -> None:
    source.add("m", "1", "production", artifact(1.0))
    source.add("m", "2", "candidate", artifact(2.0))
    source.add("m", "3", "archived", artifact(3.0))
    await repo.sync()
    assert repo.synced.is_set()
    assert repo.versions_of("m") == ["1", "2"]
    assert await answer(repo, "m") == ("1", 1.0)
    assert await answer(repo, "m", "2") == ("2", 2.0)
    with pytest.raises(NotFound):
        repo.get("m", "3")
    with pytest.raises(NotFound):
        repo.get("nope")


async def test_a_wrong_checksum_is_never_served(repo: ModelRepository, source: FakeSource) -> None:
    source.add("m", "1", "production", artifact(1.0), sha256="0" * 64)
    await repo.sync()
    assert repo.loaded() == []
    with pytest.raises(NotFound):
        repo.get("m")


async def test_promotion_keeps_the_old_version_serving_until_the_new_one_is_in(repo: ModelRepository,
                                                                               source: FakeSource) -> None:
    source.add("m", "1", "production", artifact(1.0))
    await repo.sync()
    # The registry promotes v2 (archiving v1) before inference has v2 loaded.
    source.add("m", "2", "production", artifact(2.0))
    source.stage("m", "1", "archived")
    gate = source.gates[("m", "2")] = asyncio.Event()
    await repo.sync()
    assert repo.is_loading("m", "2")
    with pytest.raises(Unavailable):
        repo.get("m", "2")
    v1 = repo.get("m", "1")
    assert v1.retiring and await answer(repo, "m") == ("1", 1.0)  # still answers, no failure
    gate.set()
    await settle(repo)
    assert await answer(repo, "m") == ("2", 2.0)
    assert repo.versions_of("m") == ["2"]
    with pytest.raises(Exception, match="unloaded"):
        v1.batcher.submit(np.ones((1, N_FEATURES), dtype=np.float32))


async def test_promotion_of_a_loaded_candidate_switches_at_once(repo: ModelRepository, source: FakeSource) -> None:
    source.add("m", "1", "production", artifact(1.0))
    source.add("m", "2", "candidate", artifact(2.0))
    await repo.sync()
    v1 = repo.get("m", "1")
    pending = v1.batcher.submit(np.ones((2, N_FEATURES), dtype=np.float32))  # queued on v1 before the switch
    source.stage("m", "2", "production")
    source.stage("m", "1", "archived")
    await repo.sync()
    assert repo.get("m").version == "2" and repo.versions_of("m") == ["2"]
    assert (await pending)[:, 1].tolist() == [1.0, 1.0]  # the unloaded version finished its queue


async def test_a_failed_successor_keeps_the_old_version_serving(repo: ModelRepository, source: FakeSource) -> None:
    source.add("m", "1", "production", artifact(1.0))
    await repo.sync()
    source.add("m", "2", "production", b"not torchscript")
    source.stage("m", "1", "archived")
    await repo.sync()
    await settle(repo)
    assert await answer(repo, "m") == ("1", 1.0)


async def test_a_model_archived_entirely_is_unloaded(repo: ModelRepository, source: FakeSource) -> None:
    source.add("m", "1", "production", artifact(1.0))
    await repo.sync()
    source.stage("m", "1", "archived")
    await repo.sync()
    with pytest.raises(NotFound):
        repo.get("m")


async def test_batching_settings_per_model(repo: ModelRepository, source: FakeSource) -> None:
    source.add("big", "1", "production", artifact(1.0))
    source.add("small", "1", "production", artifact(1.0))
    await repo.sync()
    big, small = repo.get("big").batcher, repo.get("small").batcher
    assert (big.max_batch_size, big.max_queue_delay_s) == (1024, 10e-6)
    assert (small.max_batch_size, small.max_queue_delay_s) == (256, 2000e-6)


async def test_versions_serve_their_own_optimized_module(repo: ModelRepository, source: FakeSource) -> None:
    source.add("m", "1", "production", artifact(1.5))
    await repo.sync()
    x = np.arange(6, dtype=np.float32).reshape(2, N_FEATURES)
    out = await repo.get("m").batcher.submit(x)
    np.testing.assert_allclose(out, [[4.5, 1.5], [18.0, 1.5]], rtol=1e-6)


async def test_local_source_lists_versions_with_signature_and_stages(tmp_path: Path) -> None:
    for version, scale in (("1", 1.0), ("2", 2.0), ("10", 10.0)):
        (tmp_path / "m" / version).mkdir(parents=True)
        (tmp_path / "m" / version / "model.pt").write_bytes(artifact(scale))
    (tmp_path / "m" / "signature.json").write_text(json.dumps({"n_features": N_FEATURES, "classes": ["a", "b"]}))
    (tmp_path / "empty").mkdir()
    source = LocalSource(tmp_path)
    versions = await source.serving_versions(("production", "candidate"))
    assert [(v.model, v.version, v.stage) for v in versions] == [
        ("m", "1", "candidate"), ("m", "2", "candidate"), ("m", "10", "production")]
    assert list(versions[0].signature.features) == ["f0", "f1", "f2"]
    assert await source.artifact(versions[2]) == (tmp_path / "m" / "10" / "model.pt").read_bytes()
    assert versions[2].artifact_sha256 == hashlib.sha256(await source.artifact(versions[2])).hexdigest()
    assert [v.version for v in await source.serving_versions(("production",))] == ["10"]

    repository = ModelRepository(source, InferenceSettings())
    await repository.sync()
    try:
        assert await answer(repository, "m") == ("10", 10.0)
    finally:
        await repository.close()
