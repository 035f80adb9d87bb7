"""Experiment tracking: runs started before training, metric histories, status, files, and comparison."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.errors import Conflict, InvalidArgument, NotFound
from services.registry.artifacts import ArtifactCorrupt, ArtifactStore
from services.registry.compare import compare
from services.registry.store import RegistryStore
from services.registry.views import GateResult, MetricPoint, RegisterInput, RunInput, Signature

ENV = {"dataset_id": "ds-1", "git_commit": "abc", "python_version": "CPython 3.11.7"}


@pytest.fixture
def store(tmp_path: Path) -> RegistryStore:
    s = RegistryStore(f"sqlite:///{tmp_path / 'registry.db'}", ArtifactStore(tmp_path / "art"))
    yield s
    s.close()


def test_a_run_is_started_with_its_environment_and_logs_each_epoch(store: RegistryStore) -> None:
    run = store.runs.start(RunInput(experiment="churn", params={"epochs": "3"}, seed=4, hardware="cpu:x86_64 x2",
                                    pip_freeze="torch==2.13.0", definitions_hash="defs", git_dirty=True,
                                    diff_sha256="f" * 64, **ENV))
    assert run.status == "running" and run.finished_at is None
    for epoch in (1, 2, 3):
        store.runs.log_metrics(run.id, [MetricPoint("train_loss", 1.0 / epoch, epoch),
                                        MetricPoint("accuracy", 0.5 + epoch / 10, epoch)])
    got = store.get_run(run.id)
    assert got.metrics == {"accuracy": 0.8, "train_loss": 1.0 / 3}
    assert [(p.step, p.value) for p in got.history if p.key == "accuracy"] == [(1, 0.6), (2, 0.7), (3, 0.8)]
    assert all(p.time is not None for p in got.history)
    assert got.env["seed"] == 4 and got.env["definitions_hash"] == "defs" and got.env["diff_sha256"] == "f" * 64
    assert [e.name for e in store.list_experiments()] == ["churn"]


def test_a_run_key_makes_start_idempotent_and_restarts_an_unfinished_run(store: RegistryStore) -> None:
    first = store.runs.start(RunInput(experiment="churn", key="job-1", **ENV))
    store.runs.log_metrics(first.id, [MetricPoint("accuracy", 0.5, 1)])
    again = store.runs.start(RunInput(experiment="churn", key="job-1", params={"attempt": "2"}, **ENV))
    assert again.id == first.id and again.history == [] and again.params == {"attempt": "2"}
    assert store.runs.start(RunInput(experiment="other", key="job-1", **ENV)).id != first.id
    store.register(RegisterInput(model="churn", artifact=b"w", signature=Signature(["a"]), run_id=first.id))
    done = store.runs.start(RunInput(experiment="churn", key="job-1", **ENV))
    assert done.id == first.id and done.status == "finished"  # a finished run is returned, not restarted


def test_status_rules(store: RegistryStore) -> None:
    run = store.runs.start(RunInput(experiment="churn", **ENV))
    with pytest.raises(Conflict):
        store.runs.update(run.id, status="finished")  # only a registration finishes a run
    with pytest.raises(InvalidArgument) as err:
        store.runs.update(run.id, status="done")
    assert err.value.field == "status"
    failed = store.runs.update(run.id, status="failed", reason="gate holdout failed: 0.61 < 0.74",
                               gates=[GateResult("holdout", False, "0.61 < 0.74", details={"production": 0.74})],
                               metrics={"accuracy": 0.61}, tags={"mlops.job_id": "j"})
    assert failed.status == "failed" and failed.finished_at is not None and failed.metrics == {"accuracy": 0.61}
    assert failed.gates[0].details == {"production": 0.74} and failed.tags == {"mlops.job_id": "j"}
    with pytest.raises(NotFound):
        store.runs.update("missing", status="failed")
    with pytest.raises(NotFound):
        store.runs.log_metrics("missing", [MetricPoint("a", 1.0)])


def test_run_files_are_content_addressed_and_verified(store: RegistryStore) -> None:
    run = store.runs.start(RunInput(experiment="churn", **ENV))
    meta = store.runs.put_file(run.id, "model.onnx", b"onnx bytes")
    assert store.runs.read_file(run.id, "model.onnx") == (meta, b"onnx bytes")
    assert store.get_run(run.id).files == [meta]
    with pytest.raises(InvalidArgument):
        store.runs.put_file(run.id, "../escape", b"x")
    with pytest.raises(NotFound):
        store.runs.read_file(run.id, "other")
    store.artifacts.path(meta["sha256"]).write_bytes(b"onnx bytez")
    with pytest.raises(ArtifactCorrupt):
        store.runs.read_file(run.id, "model.onnx")


def test_compare_puts_params_metrics_and_environment_side_by_side(store: RegistryStore) -> None:
    a = store.runs.start(RunInput(experiment="churn", params={"epochs": "10", "lr": "0.01"}, seed=1,
                                  pip_freeze="numpy==2.4.6\ntorch==2.13.0", **ENV))
    b = store.runs.start(RunInput(experiment="churn", params={"epochs": "20", "lr": "0.01"}, seed=1,
                                  pip_freeze="numpy==2.4.7\ntorch==2.13.0\nextra==1", **ENV))
    store.runs.log_metrics(a.id, [MetricPoint("accuracy", 0.75, 10)])
    store.runs.log_metrics(b.id, [MetricPoint("accuracy", 0.5, 20), MetricPoint("loss", 0.3, 20)])
    out = compare([store.get_run(a.id), store.get_run(b.id)])
    assert out["params"]["epochs"] == {a.id: "10", b.id: "20"}
    assert out["metrics"]["loss"] == {a.id: None, b.id: 0.3}
    assert out["differences"]["params"] == ["epochs"]
    assert out["differences"]["metrics"] == ["accuracy", "loss"]
    assert out["differences"]["env"] == []
    assert out["packages"] == {"extra": {a.id: None, b.id: "1"}, "numpy": {a.id: "2.4.6", b.id: "2.4.7"}}
    assert out["metric_deltas"] == {"accuracy": -0.25}
    assert [r["id"] for r in out["runs"]] == [a.id, b.id]
