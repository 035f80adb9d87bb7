"""The registry store against SQLite: versions, runs, stage transitions, rollback, outbox, cards."""

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
from services.registry.store import HISTORY_TAG, IDEMPOTENCY_TAG, RegistryStore
from services.registry.views import RegisterInput, RunInput, Signature


@pytest.fixture
def store(tmp_path: Path) -> RegistryStore:
    s = RegistryStore(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'registry.db'}", ArtifactStore(tmp_path / "art"))
    yield s
    s.close()


def reg(model: str = "churn", artifact: bytes = b"weights", stage: str = "", **run: object) -> RegisterInput:
    return RegisterInput(
        model=model,
        artifact=artifact,
        signature=Signature(features=["a", "b"], classes=["0", "1"]),
        run=RunInput(**run),  # type: ignore[arg-type]
        stage=stage,
        reason="trained",
        actor="trainer",
    )


def test_versions_count_up_per_model_and_record_the_run(store: RegistryStore, tmp_path: Path) -> None:
    assert (tmp_path / "nested" / "dir" / "registry.db").exists()
    history = [{"key": "loss", "value": 0.9, "step": 1, "time": 1.0}, {"key": "loss", "value": 0.5, "step": 2}]
    v1 = store.register(
        reg(
            params={"epochs": "3"},
            metrics={"accuracy": 0.9, "loss": 0.5},
            tags={"team": "x", HISTORY_TAG: json.dumps(history)},
            dataset_id="ds-1",
            git_commit="abc",
            git_dirty=True,
            python_version="3.11.7",
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
    assert run.artifacts[0]["sha256"] == v1.artifact_sha256
    assert run.to_dict()["lineage"]["model_versions"] == ["churn/1"]

    models = {m.name: m for m in store.list_models()}
    assert models["churn"].latest_version == "2"
    assert models["churn"].aliases["latest"] == "2"
    assert [e.name for e in store.list_experiments()] == ["churn", "fraud"]


def test_registration_is_validated(store: RegistryStore) -> None:
    cases = [
        (reg(model="bad name!"), "model"),
        (reg(artifact=b""), "artifact"),
        (reg(stage="prod"), "stage"),
        (RegisterInput(model="m", artifact=b"x", signature=Signature(features=[])), "signature.features"),
        (
            RegisterInput(model="m", artifact=b"x", signature=Signature(["a"]), artifact_format="onnx"),
            "artifact_format",
        ),
        (reg(tags={HISTORY_TAG: "not json"}), "run.tags"),
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
    a = store.register(reg(tags={IDEMPOTENCY_TAG: "job-1"}))
    b = store.register(reg(tags={IDEMPOTENCY_TAG: "job-1"}))
    assert a.version == b.version == "1"
    assert store.register(reg(tags={IDEMPOTENCY_TAG: "job-2"})).version == "2"


def test_artifacts_are_verified_on_read(store: RegistryStore) -> None:
    v = store.register(reg(artifact=b"real weights"))
    assert store.read_artifact("churn", v.version)[1] == b"real weights"
    store.artifacts.path(v.artifact_sha256).write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupt):
        store.read_artifact("churn", v.version)


def test_card_has_lineage_metrics_and_history(store: RegistryStore) -> None:
    v = store.register(reg(metrics={"accuracy": 0.875}, dataset_id="ds-9", git_commit="deadbeef"))
    store.set_stage("churn", v.version, "canary", reason="looks good", actor="bob")
    view = store.get_version("churn", v.version)
    card = build_card(view, store.get_run(view.run_id))
    assert card["lineage"]["dataset_id"] == "ds-9"
    assert card["training"]["metrics"]["accuracy"] == 0.875
    assert [t["to_stage"] for t in card["stage_history"]] == ["candidate", "canary"]
    md = render_markdown(card)
    assert md.startswith("# churn version 1")
    assert "ds-9" in md and "deadbeef" in md and "0.875" in md and "looks good" in md
