"""The registry store against SQLite: versions, runs, lineage, stage transitions, rollback, outbox, cards,
references, and the schema upgrade of an older database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from mlops.errors import Conflict, InvalidArgument, NotFound
from services.registry.artifacts import ArtifactCorrupt, ArtifactStore
from services.registry.card import build_card, render_markdown
from services.registry.db import ModelVersionRow
from services.registry.store import RegistryStore
from services.registry.views import GateResult, MetricPoint, RegisterInput, RunInput, Signature

LINEAGE = {"dataset_id": "ds-1", "git_commit": "abc", "python_version": "CPython 3.11.7"}


@pytest.fixture
def store(tmp_path: Path) -> RegistryStore:
    s = RegistryStore(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'registry.db'}", ArtifactStore(tmp_path / "art"))
    yield s
    s.close()


def reg(
    model: str = "churn", artifact: bytes = b"weights", stage: str = "", key: str = "", reference: bytes = b"",
    **run: object,
) -> RegisterInput:
    return RegisterInput(
        model=model,
        artifact=artifact,
        signature=Signature(features=["a", "b"], classes=["0", "1"]),
        run=RunInput(**{**LINEAGE, **run}),  # type: ignore[arg-type]
        stage=stage,
        reason="trained",
        actor="trainer",
        idempotency_key=key,
        reference=reference,
    )


REFERENCE = {
    "rows": 3,
    "features": {"a": {"kind": "numeric", "edges": [0.0, 1.0], "counts": [3], "sample": [0.1, 0.5, 0.9],
                       "mean": 0.5, "std": 0.3, "min": 0.1, "max": 0.9}},
    "prediction": {"kind": "numeric", "edges": [0.0, 1.0], "counts": [3], "sample": [0.2, 0.4, 0.6]},
}


def test_versions_count_up_per_model_and_record_the_run(store: RegistryStore, tmp_path: Path) -> None:
    assert (tmp_path / "nested" / "dir" / "registry.db").exists()
    history = [MetricPoint("loss", 0.9, 1), MetricPoint("loss", 0.5, 2)]
    v1 = store.register(
        reg(
            params={"epochs": "3"},
            metrics={"accuracy": 0.9, "loss": 0.5},
            tags={"team": "x"},
            history=history,
            git_dirty=True,
            diff_sha256="d" * 64,
            pip_freeze="numpy==2.4.6\ntorch==2.13.0",
            definitions_hash="defs-1",
            seed=7,
            hardware="cpu",
        )
    )
    v2 = store.register(reg(artifact=b"other"))
    other = store.register(reg(model="fraud"))
    assert (v1.version, v2.version, other.version) == ("1", "2", "1")
    assert v1.stage == "candidate" and v1.dataset_id == "ds-1"
    assert [t.action for t in v1.transitions] == ["registered"]

    run = store.get_run(v1.run_id)
    assert run.experiment == "churn"
    assert run.params == {"epochs": "3"}
    assert run.metrics == {"accuracy": 0.9, "loss": 0.5}
    assert run.tags == {"team": "x"}
    assert [(p.key, p.value, p.step) for p in run.history if p.key == "loss"] == [("loss", 0.9, 1), ("loss", 0.5, 2)]
    assert run.env["git_commit"] == "abc" and run.env["git_dirty"] is True and run.env["seed"] == 7
    assert run.env["diff_sha256"] == "d" * 64
    assert run.env["pip_freeze"].splitlines() == ["numpy==2.4.6", "torch==2.13.0"]
    assert run.status == "finished" and run.finished_at is not None
    assert run.artifacts[0]["sha256"] == v1.artifact_sha256
    lineage = run.to_dict()["lineage"]
    assert lineage["model_versions"] == ["churn/1"]
    assert (lineage["dataset_id"], lineage["definitions_hash"], lineage["git_commit"]) == ("ds-1", "defs-1", "abc")

    models = {m.name: m for m in store.list_models()}
    assert models["churn"].latest_version == "2"
    assert models["churn"].aliases["latest"] == "2"
    assert [e.name for e in store.list_experiments()] == ["churn", "fraud"]


def test_registration_is_validated(store: RegistryStore) -> None:
    cases = [
        (reg(model="bad name!"), "model"),
        (reg(artifact=b""), "artifact"),
        (reg(stage="prod"), "stage"),
        (RegisterInput(model="m", artifact=b"x", signature=Signature(features=[]), run=RunInput(**LINEAGE)),
         "signature.features"),
        (
            RegisterInput(model="m", artifact=b"x", signature=Signature(["a"]), artifact_format="onnx"),
            "artifact_format",
        ),
        (reg(dataset_id=""), "run.dataset_id"),
        (reg(git_commit=""), "run.git_commit"),
        (reg(python_version=""), "run.python_version"),
        (reg(reference=b"not json"), "reference"),
        (reg(reference=b'{"rows": 1, "features": {"a": {"kind": "weird"}}}'), "reference"),
        (reg(history=[MetricPoint("loss", float("nan"))]), "metrics.value"),
    ]
    for request, field in cases:
        with pytest.raises(InvalidArgument) as err:
            store.register(request)
        assert err.value.field == field
    assert store.list_models() == []


def test_one_production_per_model(store: RegistryStore) -> None:
    store.register(reg(stage="production"))
    v2 = store.register(reg(artifact=b"v2", stage="production"))
    assert v2.stage == "production"
    assert store.get_version("churn", "1").stage == "archived"
    v3 = store.register(reg(artifact=b"v3"))
    moved = store.set_stage("churn", v3.version, "Production", reason="better", actor="alice")
    assert moved.stage == "production"
    assert [v.version for v in store.list_versions("churn", ["production"])] == ["3"]
    last = moved.transitions[-1]
    assert (last.from_stage, last.to_stage, last.actor, last.reason) == ("candidate", "production", "alice", "better")
    demoted = store.get_version("churn", "2").transitions[-1]
    assert (demoted.to_stage, demoted.actor) == ("archived", "alice")
    assert "superseded by version 3" in demoted.reason


def test_database_refuses_two_production_versions(store: RegistryStore) -> None:
    store.register(reg(stage="production"))
    store.register(reg(artifact=b"v2"))
    with pytest.raises(IntegrityError), store._session() as session:
        session.execute(update(ModelVersionRow).values(stage="production"))


def test_errors_for_unknown_and_bad_input(store: RegistryStore) -> None:
    store.register(reg())
    with pytest.raises(NotFound):
        store.get_version("nope", "1")
    with pytest.raises(NotFound):
        store.get_version("churn", "9")
    with pytest.raises(NotFound):
        store.get_version("churn", "abc")
    with pytest.raises(NotFound):
        store.set_stage("churn", "9", "production")
    with pytest.raises(InvalidArgument) as err:
        store.set_stage("churn", "1", "prod")
    assert err.value.field == "stage"
    with pytest.raises(NotFound):
        store.get_run("missing")
    with pytest.raises(NotFound):
        store.resolve_alias("churn", "production")
    with pytest.raises(InvalidArgument):
        store.resolve_alias("churn", "best")


def test_rollback_restores_the_previous_production(store: RegistryStore) -> None:
    store.register(reg(stage="production"))
    store.register(reg(artifact=b"v2", stage="production"))
    back = store.rollback("churn", reason="v2 regressed", actor="oncall")
    assert back.version == "1" and back.stage == "production"
    assert store.get_version("churn", "2").stage == "archived"
    assert store.resolve_alias("churn", "production").version == "1"
    again = store.rollback("churn")
    assert again.version == "2"
    fresh = store.register(reg(model="solo", stage="production"))
    with pytest.raises(Conflict):
        store.rollback(fresh.model)


def test_lifecycle_outbox_in_order_with_stable_ids(store: RegistryStore) -> None:
    store.register(reg(stage="production"))
    store.register(reg(artifact=b"v2", stage="production"))
    events = store.pending_events()
    assert [(e.action, e.version, e.previous_stage, e.stage) for e in events] == [
        ("registered", "1", "", "production"),
        ("stage_changed", "1", "production", "archived"),
        ("registered", "2", "", "production"),
    ]
    assert len({e.event_id for e in events}) == 3
    assert events[0].event_id == f"lifecycle:churn:1:{events[0].seq}"
    store.mark_published([events[0].seq])
    assert [e.seq for e in store.pending_events()] == [e.seq for e in events[1:]]
    store.mark_published([e.seq for e in events])
    assert store.pending_events() == []


def test_idempotency_key_returns_the_first_registration(store: RegistryStore) -> None:
    a = store.register(reg(key="job-1"))
    b = store.register(reg(key="job-1", artifact=b"retry"))
    assert a.version == b.version == "1" and b.artifact_sha256 == a.artifact_sha256
    assert store.register(reg(key="job-2")).version == "2"
    assert store.register(reg(model="other", key="job-1")).version == "1"  # keys are per model
    assert len(store.list_runs("churn")) == 2


def test_reference_is_stored_content_addressed_and_verified(store: RegistryStore) -> None:
    raw = json.dumps(REFERENCE).encode()
    v = store.register(reg(reference=raw))
    assert len(v.reference_sha256) == 64 and store.artifacts.exists(v.reference_sha256)
    assert store.read_reference("churn", v.version)[1] == raw
    bare = store.register(reg(artifact=b"no reference"))
    with pytest.raises(NotFound):
        store.read_reference("churn", bare.version)
    store.artifacts.path(v.reference_sha256).write_bytes(raw[:-1] + b" ")
    with pytest.raises(ArtifactCorrupt):
        store.read_reference("churn", v.version)


def test_a_version_binds_to_a_run_started_earlier(store: RegistryStore) -> None:
    run = store.runs.start(RunInput(experiment="churn", key="job-7", params={"epochs": "2"}, **LINEAGE))
    store.runs.log_metrics(run.id, [MetricPoint("accuracy", 0.6, 1), MetricPoint("accuracy", 0.7, 2)])
    v = store.register(RegisterInput(model="churn", artifact=b"w", signature=Signature(["a"]), run_id=run.id,
                                     run=RunInput(metrics={"accuracy": 0.7}, params={"stream": "s"})))
    assert v.run_id == run.id and v.dataset_id == "ds-1"
    got = store.get_run(run.id)
    assert got.status == "finished" and got.params == {"epochs": "2", "stream": "s"}
    assert [(p.step, p.value) for p in got.history] == [(1, 0.6), (2, 0.7)]  # the equal final value is not repeated
    assert got.artifacts[0]["version"] == v.version


def test_a_failed_run_makes_no_version(store: RegistryStore) -> None:
    run = store.runs.start(RunInput(experiment="churn", **LINEAGE))
    gate = GateResult("fairness", passed=False, reason="accuracy gap 0.4 > 0.1")
    store.runs.update(run.id, status="failed", reason="gate fairness failed", gates=[gate])
    with pytest.raises(Conflict) as err:
        store.register(RegisterInput(model="churn", artifact=b"w", signature=Signature(["a"]), run_id=run.id))
    assert "gate fairness failed" in err.value.message
    assert store.list_models() == []
    failed = store.get_run(run.id)
    assert failed.status == "failed" and failed.gates == [gate] and failed.artifacts == []


def test_artifacts_are_verified_on_read(store: RegistryStore) -> None:
    v = store.register(reg(artifact=b"real weights"))
    assert store.read_artifact("churn", v.version)[1] == b"real weights"
    store.artifacts.path(v.artifact_sha256).write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupt):
        store.read_artifact("churn", v.version)


def test_card_has_every_section(store: RegistryStore) -> None:
    run = store.runs.start(RunInput(experiment="churn", params={"stream": "loans", "label": "approved",
                                                                 "features": "a,b"}, definitions_hash="defs-9",
                                    **{**LINEAGE, "dataset_id": "ds-9", "git_commit": "deadbeef"}))
    gates = [
        GateResult("holdout", True, "no production version to compare with", skipped=True),
        GateResult("fairness", True, "accuracy gap 0.03 <= 0.1", details={
            "attribute": "sex", "metric": "accuracy", "gap": 0.03, "max_gap": 0.1,
            "groups": {"f": {"rows": 40, "accuracy": 0.9, "positive_rate": 0.5},
                       "m": {"rows": 60, "accuracy": 0.87, "positive_rate": 0.4}}}),
        GateResult("robustness", True, "valid probabilities for 9 kinds of out-of-range input"),
    ]
    store.runs.update(run.id, gates=gates)
    v = store.register(RegisterInput(model="churn", artifact=b"w", signature=Signature(["a", "b"], classes=["0", "1"]),
                                     run=RunInput(metrics={"accuracy": 0.875, "baseline_accuracy": 0.6,
                                                           "rows": 100.0}),
                                     run_id=run.id, reference=json.dumps(REFERENCE).encode()))
    store.set_stage("churn", v.version, "canary", reason="looks good", actor="bob")
    view = store.get_version("churn", v.version)
    card = build_card(view, store.get_run(view.run_id), REFERENCE)
    assert card["lineage"]["dataset_id"] == "ds-9" and card["lineage"]["definitions_hash"] == "defs-9"
    assert card["metrics"]["accuracy"] == 0.875
    assert card["data"]["stream"] == "loans" and card["data"]["rows"] == 100
    assert card["data"]["feature_summary"]["a"]["max"] == 0.9
    assert card["fairness"]["evaluated"] and card["fairness"]["attribute"] == "sex"
    assert "approved" in card["intended_use"]["summary"]
    assert any("Training range" in item for item in card["limitations"])
    assert any("production" in item for item in card["limitations"])
    assert [t["to_stage"] for t in card["stage_history"]] == ["candidate", "canary"]
    md = render_markdown(card)
    assert md.startswith("# churn version 1")
    for section in ("## Intended use", "## Data", "## Metrics", "## Evaluation gates", "## Fairness",
                    "## Limitations", "## Lineage"):
        assert section in md
    assert "ds-9" in md and "deadbeef" in md and "0.875" in md and "looks good" in md and "| f | 40 |" in md


def test_an_older_database_is_upgraded_in_place(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = RegistryStore(url, ArtifactStore(tmp_path / "art"))
    old.register(reg())
    with old.engine.begin() as conn:  # what the previous schema lacked
        conn.exec_driver_sql("DROP INDEX uq_version_idempotency_key")
        conn.exec_driver_sql("ALTER TABLE model_versions DROP COLUMN idempotency_key")
        conn.exec_driver_sql("ALTER TABLE model_versions DROP COLUMN reference_sha256")
        conn.exec_driver_sql("DROP INDEX uq_run_key")
        for column in ("pip_freeze", "diff_sha256", "run_key", "gates_json"):
            conn.exec_driver_sql(f"ALTER TABLE runs DROP COLUMN {column}")
        conn.exec_driver_sql("DROP TABLE run_artifacts")
    old.close()
    new = RegistryStore(url, ArtifactStore(tmp_path / "art"))
    assert "column runs.pip_freeze" in new.db.upgraded and "table run_artifacts" in new.db.upgraded
    assert new.get_version("churn", "1").reference_sha256 == ""
    assert new.get_run(new.get_version("churn", "1").run_id).gates == []
    assert new.register(reg(key="k", reference=json.dumps(REFERENCE).encode())).version == "2"
    assert new.register(reg(key="k")).version == "2"
    new.close()


def test_recent_transitions_of_every_model_in_one_read(store: RegistryStore) -> None:
    store.register(reg("a"))
    store.register(reg("b", artifact=b"w2"))
    store.set_stage("a", "1", "shadow", reason="try it", actor="ann")
    recent = store.recent_transitions(10)
    assert [(t.model, t.version, t.transition.to_stage) for t in recent] == [
        ("a", "1", "shadow"), ("b", "1", "candidate"), ("a", "1", "candidate")]
    assert recent[0].to_dict()["actor"] == "ann" and recent[0].to_dict()["reason"] == "try it"
    assert recent[0].to_dict()["from_stage"] == "candidate"
    assert [t.model for t in store.recent_transitions(1)] == ["a"]


@pytest.mark.parametrize("version", ["1" * 5000, "²", "\u0661", "99999999999999999999", "-1", "1.0", ""])
def test_a_version_that_is_no_plain_number_is_not_found(store: RegistryStore, version: str) -> None:
    store.register(reg("a"))
    with pytest.raises(NotFound):
        store.get_version("a", version)
