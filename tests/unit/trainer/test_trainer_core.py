"""The job flow with in-memory stand-ins for Redis, the feature service and the registry (versions and runs):
captured run fields, epoch metrics, gates, registration, inheritance from the production lineage."""

from __future__ import annotations

import dataclasses
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

from mlops.auth.guard import current_principal
from mlops.auth.tokens import Principal
from mlops.errors import InvalidArgument, NotFound
from mlops.v1 import feature_pb2, registry_pb2
from services.trainer.clients import PeerError
from services.trainer.core import RUN_ID_TAG, Trainer
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


def parquet(rows: int, *, unfair: bool = False) -> bytes:
    """Label y = a > 0; with ``unfair``, group "g1" gets coin-flip labels (no model can be fair to it)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=rows)
    group = np.where(np.arange(rows) % 2 == 0, "g0", "g1")
    y = (a > 0).astype(np.int64)
    if unfair:
        y = np.where(group == "g1", rng.integers(0, 2, size=rows), y)
    table = pa.table({"entity_id": [str(i) for i in range(rows)], "a": a, "b": rng.normal(size=rows), "y": y,
                      "group": group})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


class FakeFeatures:
    def __init__(self, rows: int = 200, fail: bool = False, unfair: bool = False) -> None:
        self.rows, self.fail, self.unfair = rows, fail, unfair
        self.builds: list[tuple[str, list[str], str, int]] = []

    async def build_dataset(self, stream: str, features: list[str], label: str, last_n: int = 0
                            ) -> feature_pb2.DatasetVersion:
        if self.fail:
            raise PeerError("feature BuildDataset failed: NOT_FOUND: no stream 'x'")
        self.builds.append((stream, features, label, last_n))
        return feature_pb2.DatasetVersion(id=f"ds-{stream}", stream=stream, rows=self.rows, definitions_hash="defs")

    async def get_dataset(self, dataset_id: str) -> feature_pb2.DatasetVersion:
        return feature_pb2.DatasetVersion(id=dataset_id, stream="clicks", features=["a", "b", "group"], label="y")

    async def read_dataset(self, dataset_id: str) -> bytes:
        return parquet(self.rows, unfair=self.unfair)


class FakeRegistry:
    def __init__(self, production: registry_pb2.ModelVersion | None = None, artifact: bytes = b"") -> None:
        self.requests: list[registry_pb2.RegisterModelVersionRequest] = []
        self.on_behalf_of: list[str] = []
        self.production, self._artifact = production, artifact

    async def register(self, request: registry_pb2.RegisterModelVersionRequest,
                       on_behalf_of: str = "") -> registry_pb2.ModelVersion:
        self.requests.append(request)
        self.on_behalf_of.append(on_behalf_of)
        return registry_pb2.ModelVersion(model=request.model, version=str(len(self.requests)),
                                         run_id=request.run.tags[RUN_ID_TAG], stage=request.stage)

    async def resolve_alias(self, model: str, alias: str) -> registry_pb2.ModelVersion | None:
        return self.production

    async def artifact(self, version: registry_pb2.ModelVersion) -> bytes:
        return self._artifact


class FakeTracker:
    def __init__(self, runs: dict[str, dict[str, Any]] | None = None) -> None:
        self.runs: dict[str, dict[str, Any]] = runs or {}
        self.metric_calls = 0

    async def start(self, run: dict[str, Any]) -> dict[str, Any]:
        for r in self.runs.values():
            if r.get("key") and r["key"] == run["key"]:
                return r
        rid = uuid.uuid4().hex
        self.runs[rid] = {**run, "id": rid, "status": "running", "history": [], "gates": [], "files": {}}
        return self.runs[rid]

    async def log_metrics(self, run_id: str, points: list[dict[str, float]]) -> None:
        self.metric_calls += 1
        self.runs[run_id]["history"] += points

    async def update(self, run_id: str, **fields: Any) -> dict[str, Any]:
        self.runs[run_id].update({k: v for k, v in fields.items() if k != "tags"})
        self.runs[run_id].setdefault("tags", {}).update(fields.get("tags") or {})
        return self.runs[run_id]

    async def get(self, run_id: str) -> dict[str, Any]:
        return self.runs[run_id]

    async def put_file(self, run_id: str, name: str, data: bytes) -> dict[str, Any]:
        self.runs[run_id]["files"][name] = data
        return {"name": name}


SPEC = JobSpec(model="churn", stream="clicks", features=["a", "b"], label="y", stage="production", epochs=3, seed=5)


def make(features: FakeFeatures, registry: FakeRegistry | None = None, tracker: FakeTracker | None = None,
         **settings: Any) -> tuple[Trainer, MemoryJobs, FakeRegistry, FakeTracker]:
    jobs, registry, tracker = MemoryJobs(), registry or FakeRegistry(), tracker or FakeTracker()
    s = TrainerSettings(hidden=8, metrics_flush_s=0.01, **settings)
    return Trainer(jobs, features, registry, tracker, s), jobs, registry, tracker  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.trainer.training.pick_device", lambda world=None: torch.device("cpu"))
    monkeypatch.setattr("services.trainer.core.pick_device", lambda world=None: torch.device("cpu"))


async def test_a_job_captures_its_run_logs_each_epoch_passes_the_gates_and_registers() -> None:
    trainer, _, registry, tracker = make(FakeFeatures())
    job = await trainer.submit(SPEC, request_id="req-1")
    done = await trainer.run_job(job.id)
    assert done is not None and done.state == "succeeded", done
    assert (done.progress, done.version, done.dataset_id, done.error) == (1.0, "1", "ds-clicks", "")
    (run,) = tracker.runs.values()
    assert done.run_id == run["id"] and run["key"] == job.id and run["experiment"] == "churn"
    assert run["git_commit"] and run["python_version"].startswith("CPython") and "torch==" in run["pip_freeze"]
    assert (run["dataset_id"], run["definitions_hash"], run["seed"]) == ("ds-clicks", "defs", 5)
    assert run["hardware"].startswith("cpu:")
    assert run["params"]["features"] == "a,b" and run["tags"]["mlops.request_id"] == "req-1"
    assert [p["step"] for p in run["history"] if p["key"] == "accuracy"] == [1, 2, 3]
    assert {p["key"] for p in run["history"]} == {"train_loss", "holdout_loss", "accuracy"}
    assert [(g["name"], g["passed"], g["skipped"]) for g in done.gates] == [
        ("holdout", True, True), ("fairness", True, True), ("robustness", True, False)]
    assert "ONNX export unavailable" in run["tags"]["onnx"] or "model.onnx" in run["files"]
    (req,) = registry.requests
    assert req.model == "churn" and req.stage == "production" and req.artifact_format == "torchscript"
    assert req.idempotency_key == job.id and req.run.tags[RUN_ID_TAG] == run["id"]
    assert list(req.signature.features) == ["a", "b"] and list(req.signature.classes) == ["0", "1"]
    assert req.run.dataset_id == "ds-clicks" and req.run.seed == 5 and req.run.hardware.startswith("cpu:")
    ref = json.loads(req.reference)
    assert ref["rows"] == 200 and set(ref["features"]) == {"a", "b"}
    a = ref["features"]["a"]
    assert a["kind"] == "numeric" and len(a["edges"]) == 11 and sum(a["counts"]) == 200 and len(a["sample"]) == 200
    assert len(ref["prediction"]["edges"]) == 11 and all(0.0 <= s <= 1.0 for s in ref["prediction"]["sample"])
    model = torch.jit.load(io.BytesIO(req.artifact))
    assert model(torch.zeros(2, 2)).shape == (2, 2)
    assert (await trainer.run_job(job.id)).version == "1"  # a finished job is not run again
    assert len(registry.requests) == 1


async def test_the_version_is_registered_on_behalf_of_whoever_submitted_the_job() -> None:
    trainer, _, registry, _ = make(FakeFeatures())
    token = current_principal.set(Principal(token_id="tok-42", name="alice", role="scientist"))
    try:
        job = await trainer.submit(dataclasses.replace(SPEC, requested_by="forged"))
    finally:
        current_principal.reset(token)
    anonymous = await trainer.submit(SPEC, request_id="from-kafka")  # training.requests: no caller token
    assert job.spec.requested_by == "tok-42" and anonymous.spec.requested_by == ""
    await trainer.run_job(job.id)
    await trainer.run_job(anonymous.id)
    assert registry.on_behalf_of == ["tok-42", ""]


async def test_a_stage_the_trainers_own_role_cannot_register_at_is_refused_when_submitted() -> None:
    trainer, jobs, *_ = make(FakeFeatures())
    trainer._registers_as = "service-trainer"  # auth on, least privilege: candidate only
    for stage in ("shadow", "Canary", "production", "archived"):
        with pytest.raises(InvalidArgument, match="train at candidate") as caught:
            await trainer.submit(dataclasses.replace(SPEC, stage=stage))
        assert caught.value.field == "stage"
    assert not await jobs.recent(10)
    assert (await trainer.submit(dataclasses.replace(SPEC, stage="candidate"))).spec.stage == "candidate"
    trainer._registers_as = None  # auth off: any stage
    assert (await trainer.submit(SPEC)).spec.stage == "production"


async def test_one_job_per_request_and_event() -> None:
    trainer, *_ = make(FakeFeatures())
    a = await trainer.submit(SPEC, request_id="r", event_id="e1")
    b = await trainer.submit(SPEC, request_id="r", event_id="e2")
    c = await trainer.submit(SPEC, request_id="other", event_id="e1")
    assert a.id == b.id == c.id
    assert (await trainer.submit(SPEC)).id != a.id


async def test_empty_dataset_fails_the_job_and_its_run() -> None:
    trainer, _, registry, tracker = make(FakeFeatures(rows=0))
    job = await trainer.submit(SPEC)
    done = await trainer.run_job(job.id)
    assert done is not None and done.state == "failed" and done.error == "dataset has no rows"
    assert registry.requests == []
    assert [(r["status"], r["reason"]) for r in tracker.runs.values()] == [("failed", "dataset has no rows")]


async def test_peer_errors_fail_the_job() -> None:
    trainer, *_ = make(FakeFeatures(fail=True))
    job = await trainer.submit(SPEC)
    done = await trainer.run_job(job.id)
    assert done is not None and done.state == "failed" and "NOT_FOUND" in done.error


async def test_unknown_job_is_not_found() -> None:
    trainer, *_ = make(FakeFeatures())
    with pytest.raises(NotFound):
        await trainer.get("nope")


def _production(features: list[str]) -> registry_pb2.ModelVersion:
    return registry_pb2.ModelVersion(model="churn", version="4", run_id="prod-run", dataset_id="ds-old",
                                     stage="production", signature=registry_pb2.ModelSignature(features=features))


class _Perfect(torch.nn.Module):
    """A production model that knows the rule: P(y=1) = sigmoid(1000 a)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(1000.0 * x[:, 0:1])
        return torch.cat([1.0 - s, s], dim=1)


def _script(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


async def test_an_empty_spec_trains_as_production_was_trained_on_the_recent_rows() -> None:
    tracker = FakeTracker({"prod-run": {"id": "prod-run", "params": {"sensitive_attribute": "group",
                                                                     "fairness_max_gap": "0.5"}}})
    features = FakeFeatures()
    trainer, _, registry, _ = make(features, FakeRegistry(_production(["a", "b"]), _script(_Perfect())), tracker,
                                   holdout_tolerance=1.0)
    spec = JobSpec(model="churn", stage="candidate", epochs=2, recent_rows=150, reason="drift on a")
    job = await trainer.submit(spec)
    done = await trainer.run_job(job.id)
    assert done is not None and done.state == "succeeded", done.error
    assert features.builds == [("clicks", ["a", "b", "group"], "y", 150)]
    assert done.inherited_from == "churn/4"
    holdout, fairness, _ = done.gates
    assert holdout["details"]["production_accuracy"] == 1.0 and not holdout["skipped"]
    assert fairness["details"]["attribute"] == "group" and fairness["details"]["max_gap"] == 0.5
    run = tracker.runs[done.run_id]
    assert run["params"]["inherited_from"] == "churn/4" and run["params"]["recent_rows"] == "150"
    assert list(registry.requests[0].signature.features) == ["a", "b"]  # the attribute is not a model input


async def test_an_empty_spec_without_production_fails_with_the_reason() -> None:
    trainer, *_ = make(FakeFeatures())
    job = await trainer.submit(JobSpec(model="churn"))
    done = await trainer.run_job(job.id)
    assert done is not None and done.state == "failed" and "no production version" in done.error


async def test_a_candidate_worse_than_production_on_the_same_holdout_is_not_registered() -> None:
    tracker = FakeTracker({"prod-run": {"id": "prod-run", "params": {}}})
    trainer, _, registry, _ = make(FakeFeatures(), FakeRegistry(_production(["a"]), _script(_Perfect())), tracker)
    job = await trainer.submit(JobSpec(model="churn", stream="clicks", features=["a", "b"], label="y", epochs=1))
    done = await trainer.run_job(job.id)
    assert done is not None and done.state == "failed" and done.error.startswith("gate holdout failed")
    assert registry.requests == []
    run = tracker.runs[done.run_id]
    assert run["status"] == "failed" and run["reason"] == done.error
    assert [g["passed"] for g in run["gates"]] == [False, True, True]


async def test_an_unfair_model_is_not_registered() -> None:
    trainer, _, registry, tracker = make(FakeFeatures(rows=400, unfair=True))
    spec = JobSpec(model="churn", stream="clicks", features=["a", "b"], label="y", epochs=20,
                   sensitive_attribute="group", fairness_max_gap=0.1)
    done = await trainer.run_job((await trainer.submit(spec)).id)
    assert done is not None and done.state == "failed" and "gate fairness failed" in done.error
    assert registry.requests == [] and tracker.runs[done.run_id]["status"] == "failed"
    details = done.gates[1]["details"]
    assert details["groups"]["g0"]["accuracy"] - details["groups"]["g1"]["accuracy"] > 0.1


def _production_reading_a_missing_feature() -> tuple[FakeRegistry, FakeTracker]:
    """Production v4 reads feature "c", which the new dataset lacks: the holdout gate cannot compare."""
    return (FakeRegistry(_production(["a", "c"]), _script(_Perfect())),
            FakeTracker({"prod-run": {"id": "prod-run", "params": {}}}))


async def test_a_skipped_holdout_gate_keeps_a_new_version_out_of_production() -> None:
    trainer, _, registry, tracker = make(FakeFeatures(), *_production_reading_a_missing_feature())
    done = await trainer.run_job((await trainer.submit(SPEC)).id)
    assert done is not None and done.state == "failed"
    assert "cannot go to production" in done.error and "gate holdout skipped" in done.error
    assert "takes feature(s) c this dataset lacks" in done.error and "force" in done.error
    assert registry.requests == []
    assert tracker.runs[done.run_id]["status"] == "failed"
    holdout = done.gates[0]
    assert holdout["skipped"] and not holdout["not_applicable"]


async def test_the_same_skip_does_not_block_a_candidate() -> None:
    trainer, _, registry, _ = make(FakeFeatures(), *_production_reading_a_missing_feature())
    done = await trainer.run_job((await trainer.submit(dataclasses.replace(SPEC, stage="candidate"))).id)
    assert done is not None and done.state == "succeeded", done.error
    assert [r.stage for r in registry.requests] == ["candidate"] and not registry.requests[0].force


async def test_a_forced_production_job_registers_and_asks_the_registry_to_force_with_its_reason() -> None:
    trainer, _, registry, _ = make(FakeFeatures(), *_production_reading_a_missing_feature())
    spec = dataclasses.replace(SPEC, force=True, reason="feature c is retired upstream")
    done = await trainer.run_job((await trainer.submit(spec)).id)
    assert done is not None and done.state == "succeeded", done.error
    (req,) = registry.requests
    assert (req.stage, req.force, req.reason) == ("production", True, "feature c is retired upstream")


async def test_the_first_production_version_has_nothing_to_compare_with_and_is_not_blocked() -> None:
    trainer, _, registry, _ = make(FakeFeatures())
    done = await trainer.run_job((await trainer.submit(SPEC)).id)
    assert done is not None and done.state == "succeeded", done.error
    assert [(g["name"], g["skipped"], g["not_applicable"]) for g in done.gates[:2]] == [
        ("holdout", True, True), ("fairness", True, True)]
    assert [(r.stage, r.force) for r in registry.requests] == [("production", False)]


@pytest.mark.parametrize(("change", "field"), [
    ({"force": True, "reason": ""}, "reason"),
    ({"force": True, "reason": "why", "stage": "candidate"}, "force"),
])
async def test_force_needs_a_reason_and_a_production_stage(change: dict[str, Any], field: str) -> None:
    trainer, *_ = make(FakeFeatures())
    with pytest.raises(InvalidArgument) as err:
        await trainer.submit(dataclasses.replace(SPEC, **change))
    assert err.value.field == field
