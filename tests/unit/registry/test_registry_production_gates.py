"""A production stage and the gates of the version's run, in the registry store: a skipped gate that was not
evaluated refuses registration in production and promotion to production (409) unless forced with a reason; a
forced change says which gates it went past (the core audits it); other stages are never blocked."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.auth.guard import current_principal
from mlops.auth.tokens import Principal
from mlops.errors import Conflict, InvalidArgument
from mlops.v1 import events_pb2
from services.registry.artifacts import ArtifactStore
from services.registry.core import Registry
from services.registry.store import RegistryStore
from services.registry.views import GateResult, RegisterInput, RunInput, Signature

LINEAGE = {"dataset_id": "ds-1", "git_commit": "abc", "python_version": "CPython 3.11.7"}
SKIPPED_HOLDOUT = GateResult("holdout", passed=True, skipped=True,
                             reason="production v1 takes feature(s) c this dataset lacks")
NO_ATTRIBUTE = GateResult("fairness", passed=True, skipped=True, reason="no sensitive attribute declared",
                          not_applicable=True)
ROBUST = GateResult("robustness", passed=True, reason="valid probabilities")


@pytest.fixture
def store(tmp_path: Path) -> RegistryStore:
    s = RegistryStore(f"sqlite:///{tmp_path / 'registry.db'}", ArtifactStore(tmp_path / "art"))
    yield s
    s.close()


def _run(store: RegistryStore, gates: list[GateResult]) -> str:
    run = store.runs.start(RunInput(experiment="churn", **LINEAGE))
    store.runs.update(run.id, gates=gates)
    return run.id


def _register(store: RegistryStore, run_id: str, stage: str, *, force: bool = False, reason: str = "trained"):
    return store.register(RegisterInput(model="churn", artifact=b"w" + run_id.encode(), signature=Signature(["a"]),
                                        run_id=run_id, stage=stage, force=force, reason=reason))


def test_a_skipped_gate_refuses_registration_in_production(store: RegistryStore) -> None:
    run_id = _run(store, [SKIPPED_HOLDOUT, NO_ATTRIBUTE, ROBUST])
    with pytest.raises(Conflict) as err:
        _register(store, run_id, "production")
    assert "cannot go to production" in err.value.message and "gate holdout skipped" in err.value.message
    assert "fairness" not in err.value.message  # not applicable: it blocks nothing
    assert store.list_models() == []
    candidate = _register(store, run_id, "candidate")
    assert candidate.stage == "candidate" and candidate.forced_past == []


def test_promotion_to_production_is_refused_until_forced_with_a_reason(store: RegistryStore) -> None:
    v = _register(store, _run(store, [SKIPPED_HOLDOUT, ROBUST]), "candidate")
    assert store.set_stage("churn", v.version, "canary").stage == "canary"  # other stages: never blocked
    with pytest.raises(Conflict):
        store.set_stage("churn", v.version, "production", reason="looks fine")
    with pytest.raises(InvalidArgument) as err:
        store.set_stage("churn", v.version, "production", force=True, reason="  ")
    assert err.value.field == "reason"
    assert store.get_version("churn", v.version).stage == "canary"
    forced = store.set_stage("churn", v.version, "production", force=True, reason="c is retired upstream")
    assert forced.stage == "production" and [g["name"] for g in forced.forced_past] == ["holdout"]
    assert forced.to_dict()["forced_past"][0]["skipped"] is True
    again = store.set_stage("churn", v.version, "production")  # already there: nothing changes, nothing checked
    assert again.stage == "production" and again.forced_past == []


def test_a_failed_gate_blocks_too_and_a_clean_run_needs_no_force(store: RegistryStore) -> None:
    failed = GateResult("robustness", passed=False, reason="nan: non-finite output")
    v = _register(store, _run(store, [failed]), "candidate")
    with pytest.raises(Conflict) as err:
        store.set_stage("churn", v.version, "production")
    assert "gate robustness failed (nan: non-finite output)" in err.value.message
    clean = _register(store, _run(store, [NO_ATTRIBUTE, ROBUST]), "production")
    assert clean.stage == "production" and clean.forced_past == []


def test_a_gate_record_without_the_new_flag_is_read_as_blocking(store: RegistryStore) -> None:
    """Gates recorded before ``not_applicable`` existed: a skipped one reads as not evaluated (the safe side)."""
    run_id = _run(store, [])
    store.runs.update(run_id, gates=[GateResult.from_dict({"name": "holdout", "passed": True, "skipped": True})])
    with pytest.raises(Conflict):
        _register(store, run_id, "production")


def test_force_is_for_production_only(store: RegistryStore) -> None:
    run_id = _run(store, [SKIPPED_HOLDOUT])
    with pytest.raises(InvalidArgument) as err:
        _register(store, run_id, "canary", force=True)
    assert err.value.field == "force"
    v = _register(store, run_id, "candidate")
    with pytest.raises(InvalidArgument):
        store.set_stage("churn", v.version, "shadow", force=True, reason="x")


class Recorder:
    """A started producer that keeps what it was asked to send."""

    started = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    async def send(self, topic: str, message: object, *, key: str, event_id: str) -> str:
        self.sent.append((topic, message))
        return event_id


async def test_a_forced_promotion_is_audited_with_its_reason_and_the_gates(store: RegistryStore) -> None:
    producer = Recorder()
    registry = Registry(store, producer)  # type: ignore[arg-type]
    v = _register(store, _run(store, [SKIPPED_HOLDOUT]), "candidate")
    token = current_principal.set(Principal(token_id="t-9", name="olga", role="admin"))
    try:
        await registry.set_stage("churn", v.version, "production", reason="c is retired", actor="cli:olga",
                                 force=True)
    finally:
        current_principal.reset(token)
    audits = [m for topic, m in producer.sent if topic == "audit.log"]
    assert len(audits) == 1 and isinstance(audits[0], events_pb2.AuditRecord)
    record = audits[0]
    assert (record.action, record.target, record.actor, record.actor_id) == (
        "stage.forced", f"churn/{v.version}", "olga", "t-9")
    assert record.reason.startswith("c is retired [forced past: gate holdout skipped")
