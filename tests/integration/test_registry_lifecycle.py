"""The registry against the real stack: promotion through the CLI emits ``models.lifecycle`` with who and
why, rollback in one call (CLI, REST, gRPC), one production version, corrupted bytes refused on load,
lineage required at registration, idempotent registration, ``mlops models list``."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path

import grpc
import httpx
import pytest
import torch

from mlops.bus import topics
from mlops.v1 import events_pb2, registry_pb2, registry_pb2_grpc
from tests.integration.kafka_util import header, read_until
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

REFERENCE = {"rows": 2, "features": {"f": {"kind": "numeric", "edges": [0.0, 1.0], "counts": [2], "sample": [0.0, 1.0],
                                           "mean": 0.5, "std": 0.5, "min": 0.0, "max": 1.0}},
             "prediction": {"kind": "numeric", "edges": [0.0, 1.0], "counts": [2], "sample": [0.2, 0.8]}}


def _artifact(bias: float) -> bytes:
    module = torch.nn.Linear(1, 2)
    with torch.no_grad():
        module.bias.fill_(bias)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Sequential(module, torch.nn.Softmax(dim=1))), buf)
    return buf.getvalue()


def _reference(model: str) -> bytes:
    # Per model, so that no two tests share the content-addressed bytes the corruption test flips.
    return json.dumps({**REFERENCE, "note": model}).encode()


def _register(stub: registry_pb2_grpc.RegistryServiceStub, model: str, bias: float, stage: str,
              **extra: object) -> registry_pb2.ModelVersion:
    return stub.RegisterModelVersion(registry_pb2.RegisterModelVersionRequest(
        model=model,
        run=registry_pb2.RunInfo(experiment=model, params={"bias": str(bias)}, metrics={"accuracy": 0.5 + bias / 10},
                                 dataset_id="ds-registry-test", git_commit="0" * 40, python_version="CPython 3.11",
                                 pip_freeze="torch==2.13.0", seed=1, hardware="cpu"),
        artifact=_artifact(bias), artifact_format="torchscript",
        signature=registry_pb2.ModelSignature(features=["f"], input_name="input", output_name="output",
                                              classes=["0", "1"]),
        stage=stage, reason="registered by a test", reference=_reference(model), **extra,
    ), timeout=30, metadata=(("x-mlops-actor", "test"),))


@pytest.fixture(scope="module")
def stub(stack: Stack) -> registry_pb2_grpc.RegistryServiceStub:
    with grpc.insecure_channel(stack.grpc("registry")) as channel:
        yield registry_pb2_grpc.RegistryServiceStub(channel)


def _production(stack: Stack, model: str) -> str:
    return httpx.get(stack.url("registry", f"/v1/models/{model}/aliases/production"), timeout=30).json()["version"]


def _lifecycle(stack: Stack, model: str, want: int) -> list[events_pb2.ModelLifecycle]:
    def mine(records) -> list[events_pb2.ModelLifecycle]:  # type: ignore[no-untyped-def]
        out = []
        for r in records:
            if r.key == model.encode():
                msg = events_pb2.ModelLifecycle()
                msg.ParseFromString(r.value)
                assert (header(r, "event_id") or "").startswith(f"lifecycle:{model}:{msg.version}:")
                out.append(msg)
        return out

    records = asyncio.run(read_until(stack.kafka, topics.MODELS_LIFECYCLE, lambda rs: len(mine(rs)) >= want,
                                     timeout_s=60))
    return mine(records)


def test_promotion_emits_lifecycle_events_and_rollback_restores_the_previous_version(
    stack: Stack, stub: registry_pb2_grpc.RegistryServiceStub
) -> None:
    model = f"reg-{uuid.uuid4().hex[:8]}"
    assert _register(stub, model, 0.1, "production").version == "1"
    assert _register(stub, model, 0.2, "candidate").version == "2"

    out = stack.mlops("models", "promote", model, "2", "--to", "production", "--reason", "wins the bandit")
    assert "-> production" in out.stdout and "wins the bandit" in out.stdout
    assert _production(stack, model) == "2"
    v1 = httpx.get(stack.url("registry", f"/v1/models/{model}/versions/1"), timeout=30).json()
    assert v1["stage"] == "archived" and "superseded by version 2" in v1["transitions"][-1]["reason"]

    events = _lifecycle(stack, model, want=4)
    assert [(e.action, e.version, e.previous_stage, e.stage) for e in events[:4]] == [
        ("registered", "1", "", "production"),
        ("registered", "2", "", "candidate"),
        ("stage_changed", "1", "production", "archived"),
        ("stage_changed", "2", "candidate", "production"),
    ]
    promoted = events[3]
    assert promoted.reason == "wins the bandit" and promoted.actor.startswith("cli") and promoted.time.seconds > 0

    # Rollback in one call: CLI, then gRPC, then REST (each goes to the holder before the current one).
    out = stack.mlops("models", "rollback", model, "--reason", "v2 regressed")
    assert f"{model} v1" in out.stdout and _production(stack, model) == "1"
    back = stub.Rollback(registry_pb2.RollbackRequest(model=model, reason="v1 was fine after all"), timeout=30)
    assert (back.version, back.stage) == ("2", "production") and _production(stack, model) == "2"
    r = httpx.post(stack.url("registry", f"/v1/models/{model}/rollback"), json={"reason": "again"}, timeout=30)
    assert r.status_code == 200 and r.json()["version"] == "1"
    versions = httpx.get(stack.url("registry", f"/v1/models/{model}/versions"), timeout=30).json()["versions"]
    assert [v["stage"] for v in versions].count("production") == 1
    events = _lifecycle(stack, model, want=10)
    rolled = [e for e in events if e.action == "stage_changed" and e.stage == "production"]
    assert [(e.version, e.reason) for e in rolled[1:]] == [
        ("1", "v2 regressed"), ("2", "v1 was fine after all"), ("1", "again")]

    listed = stack.mlops("models", "list").stdout
    assert model in listed
    as_json = json.loads(stack.mlops("models", "list", "--json").stdout)
    assert any(m["name"] == model and m["aliases"]["production"] == "1" for m in as_json)

    lone = f"lone-{uuid.uuid4().hex[:8]}"
    _register(stub, lone, 0.3, "production")
    refused = stack.mlops("models", "rollback", lone, check=False)
    assert refused.returncode == 1 and "no previous production version" in refused.stdout


def test_corrupted_bytes_are_refused_on_load(stack: Stack, stub: registry_pb2_grpc.RegistryServiceStub) -> None:
    model = f"corrupt-{uuid.uuid4().hex[:8]}"
    # Archived: no serving stage, so the inference service never tries to load it.
    # (Its weights are freshly initialised at random, so no other test shares these content-addressed bytes.)
    v = _register(stub, model, 0.4, "archived")
    ref = registry_pb2.ModelVersionRef(model=model, version=v.version)
    assert b"".join(c.data for c in stub.GetArtifact(ref, timeout=30))
    assert stub.GetReference(ref, timeout=30).json == _reference(model)
    for sha in (v.artifact_sha256, v.reference_sha256):
        path = Path(stack.home) / "artifacts" / sha[:2] / sha
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.chmod(0o644)
        path.write_bytes(bytes(data))

    r = httpx.get(stack.url("registry", f"/v1/models/{model}/versions/{v.version}/artifact"), timeout=30)
    assert r.status_code == 500 and r.json()["error"]["code"] == "artifact_corrupt"
    with pytest.raises(grpc.RpcError) as err:
        b"".join(c.data for c in stub.GetArtifact(ref, timeout=30))
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    with pytest.raises(grpc.RpcError) as err:
        stub.GetReference(ref, timeout=30)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    r = httpx.get(stack.url("registry", f"/v1/models/{model}/versions/{v.version}/card"), timeout=30)
    assert r.status_code == 500  # the card reads the reference, verified like the artifact


def test_registration_needs_lineage_and_is_idempotent(
    stack: Stack, stub: registry_pb2_grpc.RegistryServiceStub
) -> None:
    model = f"lineage-{uuid.uuid4().hex[:8]}"
    with pytest.raises(grpc.RpcError) as err:
        stub.RegisterModelVersion(registry_pb2.RegisterModelVersionRequest(
            model=model, run=registry_pb2.RunInfo(python_version="CPython 3.11", git_commit="abc"),
            artifact=b"x", signature=registry_pb2.ModelSignature(features=["f"])), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "dataset_id" in err.value.details()
    a = _register(stub, model, 0.5, "candidate", idempotency_key="job-1")
    b = _register(stub, model, 0.6, "candidate", idempotency_key="job-1")
    assert a.version == b.version == "1" and a.artifact_sha256 == b.artifact_sha256
    run = httpx.get(stack.url("registry", f"/v1/runs/{a.run_id}"), timeout=30).json()
    assert run["env"]["pip_freeze"] == "torch==2.13.0" and run["lineage"]["model_versions"] == [f"{model}/1"]
    c = _register(stub, model, 0.7, "candidate")
    compared = httpx.get(stack.url("registry", "/v1/runs/compare"), params=[("run", a.run_id), ("run", c.run_id)],
                         timeout=30).json()
    assert compared["params"]["bias"] == {a.run_id: "0.5", c.run_id: "0.7"}
    assert compared["differences"]["params"] == ["bias"]
    r = httpx.get(stack.url("registry", "/v1/runs/compare"), params={"run": a.run_id}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["field"] == "run"
