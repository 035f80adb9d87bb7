"""The job flow with in-memory stand-ins for Redis, the feature service and the registry."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mlops.errors import NotFound
from mlops.v1 import feature_pb2, registry_pb2
from services.trainer.clients import PeerError
from services.trainer.core import HISTORY_TAG, IDEMPOTENCY_TAG, Trainer
from services.trainer.jobs import UNFINISHED, Job, JobSpec
from services.trainer.settings import TrainerSettings


class MemoryJobs:
    """JobStore's behaviour without Redis."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.owners: dict[str, str] = {}

    async def create(self, spec: JobSpec, *, request_id: str = "", event_id: str = "") -> tuple[Job, bool]:
        for key in (request_id, event_id):
            if key and key in self.owners:
                return self.jobs[self.owners[key]], False
        job = Job(id=uuid.uuid4().hex, spec=spec, created_at=time.time())
        job.request_id = request_id or job.id
        self.owners.update({k: job.id for k in (job.request_id, event_id) if k})
        self.jobs[job.id] = job
        return job, True

    async def get(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        return Job.from_redis({k.encode(): v.encode() for k, v in job.to_redis().items()}) if job else None

    async def update(self, job_id: str, **fields: Any) -> None:
        for k, v in fields.items():
            setattr(self.jobs[job_id], k, v)

    async def progress(self, job_id: str, fraction: float) -> None:
        job = self.jobs[job_id]
        if job.state == "running":
            job.progress = max(job.progress, fraction)

    async def recent(self, limit: int = 50) -> list[Job]:
        return list(self.jobs.values())[-limit:]

    async def unfinished(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.state in UNFINISHED]


def parquet(rows: int) -> bytes:
    rng = np.random.default_rng(0)
    a = rng.normal(size=rows)
    table = pa.table(
        {"entity_id": [str(i) for i in range(rows)], "a": a, "b": rng.normal(size=rows), "y": (a > 0).astype(np.int64)}
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


class FakeFeatures:
    def __init__(self, rows: int = 200, fail: bool = False) -> None:
        self.rows, self.fail = rows, fail

    async def build_dataset(self, stream: str, features: list[str], label: str) -> feature_pb2.DatasetVersion:
        if self.fail:
            raise PeerError("feature BuildDataset failed: NOT_FOUND: no stream 'x'")
        return feature_pb2.DatasetVersion(id=f"ds-{stream}", stream=stream, rows=self.rows)

    async def read_dataset(self, dataset_id: str) -> bytes:
        return parquet(self.rows)


class FakeRegistry:
    def __init__(self) -> None:
        self.requests: list[registry_pb2.RegisterModelVersionRequest] = []

    async def register(self, request: registry_pb2.RegisterModelVersionRequest) -> registry_pb2.ModelVersion:
        self.requests.append(request)
        return registry_pb2.ModelVersion(
            model=request.model, version=str(len(self.requests)), run_id="run-1", stage=request.stage
        )


SPEC = JobSpec(model="churn", stream="clicks", features=["a", "b"], label="y", stage="production", epochs=3, seed=5)


def make(features: FakeFeatures) -> tuple[Trainer, MemoryJobs, FakeRegistry]:
    jobs, registry = MemoryJobs(), FakeRegistry()
    return Trainer(jobs, features, registry, TrainerSettings(hidden=8)), jobs, registry  # type: ignore[arg-type]


async def test_a_job_trains_and_registers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.trainer.training.pick_device", lambda: torch.device("cpu"))
    trainer, _, registry = make(FakeFeatures())
    job = await trainer.submit(SPEC, request_id="req-1")
    done = await trainer.run_job(job.id)
    assert done is not None and done.state == "succeeded", done
    assert (done.progress, done.version, done.run_id, done.dataset_id, done.error) == (
        1.0,
        "1",
        "run-1",
        "ds-clicks",
        "",
    )
    assert 0.0 <= done.metrics["accuracy"] <= 1.0
    (req,) = registry.requests
    assert req.model == "churn" and req.stage == "production" and req.artifact_format == "torchscript"
    assert list(req.signature.features) == ["a", "b"] and list(req.signature.classes) == ["0", "1"]
    assert (req.signature.input_name, req.signature.output_name) == ("input", "output")
    assert req.run.dataset_id == "ds-clicks" and req.run.seed == 5 and req.run.python_version
    assert req.run.tags[IDEMPOTENCY_TAG] == job.id and req.run.tags["mlops.request_id"] == "req-1"
    assert {p["key"] for p in json.loads(req.run.tags[HISTORY_TAG])} == {"train_loss", "holdout_loss", "accuracy"}
    model = torch.jit.load(io.BytesIO(req.artifact))
    assert model(torch.zeros(2, 2)).shape == (2, 2)
    assert (await trainer.run_job(job.id)).version == "1"  # a finished job is not run again
    assert len(registry.requests) == 1


async def test_one_job_per_request_and_event() -> None:
    trainer, _, _ = make(FakeFeatures())
    a = await trainer.submit(SPEC, request_id="r", event_id="e1")
    b = await trainer.submit(SPEC, request_id="r", event_id="e2")
    c = await trainer.submit(SPEC, request_id="other", event_id="e1")
    assert a.id == b.id == c.id
    assert (await trainer.submit(SPEC)).id != a.id


async def test_empty_dataset_fails_with_a_message() -> None:
    trainer, _, registry = make(FakeFeatures(rows=0))
    job = await trainer.submit(SPEC)
    done = await trainer.run_job(job.id)
    assert done is not None and done.state == "failed" and done.error == "dataset has no rows"
    assert registry.requests == []


async def test_peer_errors_fail_the_job() -> None:
    trainer, _, _ = make(FakeFeatures(fail=True))
    job = await trainer.submit(SPEC)
    done = await trainer.run_job(job.id)
    assert done is not None and done.state == "failed" and "NOT_FOUND" in done.error


async def test_unknown_job_is_not_found() -> None:
    trainer, _, _ = make(FakeFeatures())
    with pytest.raises(NotFound):
        await trainer.get("nope")
