"""Plain records the registry hands out (and takes in), independent of SQLAlchemy sessions and transports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


def iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None


@dataclass(slots=True)
class Signature:
    features: list[str]
    input_name: str = "input"
    output_name: str = "output"
    classes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class MetricPoint:
    key: str
    value: float
    step: int = 0
    time: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "step": self.step, "time": iso(self.time)}


@dataclass(slots=True)
class RunInput:
    """What a caller says about a run: at its start (``POST /v1/runs``) or with a registration."""

    experiment: str = ""
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    history: list[MetricPoint] = field(default_factory=list)
    dataset_id: str = ""
    definitions_hash: str = ""
    git_commit: str = ""
    git_dirty: bool = False
    diff_sha256: str = ""
    python_version: str = ""
    pip_freeze: str = ""
    seed: int = 0
    hardware: str = ""
    key: str = ""  # idempotency key of the run within its experiment
    status: str = ""


@dataclass(slots=True)
class RegisterInput:
    model: str
    artifact: bytes
    signature: Signature
    run: RunInput = field(default_factory=RunInput)
    artifact_format: str = "torchscript"
    stage: str = ""
    reason: str = ""
    actor: str = ""
    reference: bytes = b""  # JSON reference distributions of the training data
    idempotency_key: str = ""
    run_id: str = ""  # bind the version to this existing run instead of recording a new one
    force: bool = False  # to production although a gate of its run blocks it (needs a reason; audited)


@dataclass(slots=True)
class GateResult:
    """One evaluation gate's outcome as the trainer reports it."""

    name: str
    passed: bool
    reason: str = ""
    skipped: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    #: skipped because there was nothing to check against; blocks nothing (:mod:`mlops.gate_policy`)
    not_applicable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateResult:
        return cls(
            name=str(d.get("name", "")),
            passed=bool(d.get("passed", False)),
            reason=str(d.get("reason", "")),
            skipped=bool(d.get("skipped", False)),
            details=dict(d.get("details") or {}),
            not_applicable=bool(d.get("not_applicable", False)),
        )


@dataclass(slots=True)
class Transition:
    seq: int
    action: str
    from_stage: str
    to_stage: str
    actor: str
    reason: str
    time: datetime

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["time"] = iso(self.time)
        return d


@dataclass(slots=True)
class ModelTransition:
    """A stage transition with the model version it moved: one row of the registry-wide history."""

    model: str
    version: str
    transition: Transition

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, **self.transition.to_dict()}


@dataclass(slots=True)
class VersionView:
    model: str
    version: str
    run_id: str
    stage: str
    artifact_sha256: str
    artifact_format: str
    artifact_size: int
    signature: Signature
    created_at: datetime
    stage_updated_at: datetime
    dataset_id: str = ""
    transitions: list[Transition] = field(default_factory=list)
    reference_sha256: str = ""
    #: the gates a production stage was forced past by this change (empty unless forced): audited by core
    forced_past: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "run_id": self.run_id,
            "stage": self.stage,
            "artifact_sha256": self.artifact_sha256,
            "artifact_format": self.artifact_format,
            "artifact_size": self.artifact_size,
            "signature": asdict(self.signature),
            "created_at": iso(self.created_at),
            "stage_updated_at": iso(self.stage_updated_at),
            "dataset_id": self.dataset_id,
            "reference_sha256": self.reference_sha256,
            "transitions": [t.to_dict() for t in self.transitions],
            **({"forced_past": self.forced_past} if self.forced_past else {}),
        }


@dataclass(slots=True)
class RunView:
    id: str
    experiment: str
    status: str
    created_at: datetime
    params: dict[str, str]
    metrics: dict[str, float]
    history: list[MetricPoint]
    tags: dict[str, str]
    env: dict[str, Any]  # what was captured: dataset, code, Python, packages, seed, hardware
    artifacts: list[dict[str, Any]]  # model versions made from this run
    files: list[dict[str, Any]] = field(default_factory=list)  # the run's own named artifacts
    gates: list[GateResult] = field(default_factory=list)
    reason: str = ""
    finished_at: datetime | None = None
    key: str = ""

    def lineage(self) -> dict[str, Any]:
        """run -> dataset version -> feature definitions -> code, and the versions made from the run."""
        return {
            "run_id": self.id,
            "dataset_id": self.env.get("dataset_id", ""),
            "definitions_hash": self.env.get("definitions_hash", ""),
            "stream": self.params.get("stream", ""),
            "features": [f for f in self.params.get("features", "").split(",") if f],
            "label": self.params.get("label", ""),
            "git_commit": self.env.get("git_commit", ""),
            "git_dirty": self.env.get("git_dirty", False),
            "diff_sha256": self.env.get("diff_sha256", ""),
            "model_versions": [f"{a['model']}/{a['version']}" for a in self.artifacts],
        }

    def to_dict(self, *, pip_freeze: bool = True) -> dict[str, Any]:
        env = dict(self.env)
        if not pip_freeze:
            env["pip_freeze"] = f"{len(env.get('pip_freeze', '').splitlines())} packages (see GET /v1/runs/{self.id})"
        return {
            "id": self.id,
            "experiment": self.experiment,
            "status": self.status,
            "reason": self.reason,
            "created_at": iso(self.created_at),
            "finished_at": iso(self.finished_at),
            "params": self.params,
            "metrics": self.metrics,
            "metric_history": [p.to_dict() for p in self.history],
            "tags": self.tags,
            "env": env,
            "gates": [g.to_dict() for g in self.gates],
            "artifacts": self.artifacts,
            "files": self.files,
            "lineage": self.lineage(),
        }


@dataclass(slots=True)
class ModelSummary:
    name: str
    created_at: datetime
    latest_version: str
    versions: dict[str, str]  # version -> stage
    aliases: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "created_at": iso(self.created_at),
            "latest_version": self.latest_version,
            "versions": [{"version": v, "stage": s} for v, s in self.versions.items()],
            "aliases": self.aliases,
        }


@dataclass(slots=True)
class ExperimentView:
    id: int
    name: str
    created_at: datetime
    runs: int
    latest_run_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": iso(self.created_at),
            "runs": self.runs,
            "latest_run_id": self.latest_run_id,
        }


@dataclass(slots=True)
class LifecycleEvent:
    """A ``models.lifecycle`` record owed by one transition; ``seq`` makes its event_id unique."""

    seq: int
    action: str
    model: str
    version: str
    stage: str
    previous_stage: str
    artifact_sha256: str
    reason: str
    actor: str
    time: datetime

    @property
    def event_id(self) -> str:
        return f"lifecycle:{self.model}:{self.version}:{self.seq}"
