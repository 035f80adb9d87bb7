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
    """What a caller says about the run that produced a version."""

    experiment: str = ""
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    history: list[MetricPoint] = field(default_factory=list)
    dataset_id: str = ""
    git_commit: str = ""
    git_dirty: bool = False
    python_version: str = ""
    seed: int = 0
    hardware: str = ""


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
            "transitions": [t.to_dict() for t in self.transitions],
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
    env: dict[str, Any]
    artifacts: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "experiment": self.experiment,
            "status": self.status,
            "created_at": iso(self.created_at),
            "params": self.params,
            "metrics": self.metrics,
            "metric_history": [p.to_dict() for p in self.history],
            "tags": self.tags,
            "env": self.env,
            "artifacts": self.artifacts,
            "lineage": {
                "dataset_id": self.env.get("dataset_id", ""),
                "git_commit": self.env.get("git_commit", ""),
                "git_dirty": self.env.get("git_dirty", False),
                "model_versions": [f"{a['model']}/{a['version']}" for a in self.artifacts],
            },
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
