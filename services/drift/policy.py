"""The retraining policy: which signals make the drift service ask the trainer for a new candidate.

Declared in a YAML file (``services/drift/retraining.yaml``, or ``MLOPS_DRIFT_RETRAINING_POLICY``)::

    policies:
      - models: ["*"]               # fnmatch patterns; the first policy that matches a model applies
        stages: [production]        # only signals about versions in these stages count ([] = any)
        cooldown_s: 900             # one training request per model per cooldown, whatever triggered it
        request: {stage: candidate, recent_rows: 2000}
        triggers:
          - {type: drift, kinds: [concept, data]}
          - {type: quality, metric: accuracy, below: 0.7, min_labels: 200, window: 500}
          - {type: schedule, cron: "0 3 * * *"}     # or every_s: 86400
          - {type: new_labels, count: 5000}

Every training request carries empty stream/features/label: "as the current production version was
trained" (the trainer resolves them from the production version's lineage).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated, Literal

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops.errors import InvalidArgument

DriftKind = Literal["data", "prediction", "concept", "quality"]


class DriftTrigger(BaseModel):
    """A drift alert of one of ``kinds`` about a version of the model."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["drift"] = "drift"
    kinds: list[DriftKind] = Field(default_factory=lambda: ["concept", "data"])
    # A model retrained the moment the world changes learns mostly the old world: wait for this many
    # labelled outcomes after the alert, then train on exactly those rows (0: ask at once).
    settle_labels: int = Field(0, ge=0, description="labelled outcomes to wait for after the alert")


class QualityTrigger(BaseModel):
    """Online quality of a version below (accuracy) or above (log loss) a threshold."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["quality"] = "quality"
    metric: Literal["accuracy", "log_loss"] = "accuracy"
    below: float | None = Field(None, description="accuracy below this triggers")
    above: float | None = Field(None, description="log loss above this triggers")
    min_labels: int = Field(200, gt=0, description="labelled outcomes needed before the figure counts")
    window: int = Field(500, gt=0, description="most recent labelled outcomes the figure is computed on")
    source: Literal["labels", "feedback"] = Field(
        "labels",
        description="labels: the drift service's own window of recent labels; feedback: the feedback "
        "service's GetQuality (cumulative since the version started)",
    )

    @model_validator(mode="after")
    def _threshold(self) -> QualityTrigger:
        if self.metric == "accuracy" and self.below is None:
            raise ValueError("an accuracy trigger needs `below`")
        if self.metric == "log_loss" and self.above is None:
            raise ValueError("a log_loss trigger needs `above`")
        return self

    def breached(self, value: float) -> bool:
        if self.metric == "accuracy":
            return self.below is not None and value < self.below
        return self.above is not None and value > self.above


class ScheduleTrigger(BaseModel):
    """A request at fixed times: a cron expression (UTC) or a period in seconds."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["schedule"] = "schedule"
    cron: str | None = None
    every_s: float | None = Field(None, gt=0)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None and not croniter.is_valid(v):
            raise ValueError(f"not a cron expression: {v!r}")
        return v

    @model_validator(mode="after")
    def _one(self) -> ScheduleTrigger:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("a schedule needs exactly one of `cron` and `every_s`")
        return self

    def next_after(self, t: float) -> float:
        """The first scheduled time strictly after ``t`` (epoch seconds)."""
        if self.every_s is not None:
            return (t // self.every_s + 1) * self.every_s
        assert self.cron is not None
        return float(croniter(self.cron, t).get_next(float))


class NewLabelsTrigger(BaseModel):
    """``count`` labelled outcomes for the model since its last training request."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["new_labels"] = "new_labels"
    count: int = Field(gt=0)


Trigger = Annotated[DriftTrigger | QualityTrigger | ScheduleTrigger | NewLabelsTrigger, Field(discriminator="type")]


class RequestSpec(BaseModel):
    """What the training request asks for."""

    model_config = ConfigDict(extra="forbid")
    stage: str = "candidate"
    recent_rows: int = Field(2000, ge=0, description="train on the most recent rows only (0: all)")
    epochs: int = Field(0, ge=0, description="0: the trainer's default")
    seed: int = 0


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[str] = Field(default_factory=lambda: ["*"])
    stages: list[str] = Field(default_factory=lambda: ["production"])
    cooldown_s: float = Field(900.0, ge=0)
    request: RequestSpec = Field(default_factory=RequestSpec)
    triggers: list[Trigger] = Field(default_factory=list)

    def matches(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)

    def counts_stage(self, stage: str) -> bool:
        return not self.stages or stage in self.stages


class RetrainingPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    policies: list[Policy] = Field(default_factory=list)

    def for_model(self, model: str) -> Policy | None:
        """The first policy whose patterns match ``model``; None: the model is never retrained by the loop."""
        if not self.enabled or not model:
            return None
        return next((p for p in self.policies if p.matches(model)), None)

    def named_models(self) -> list[str]:
        """Models named without wildcards: the schedule covers them even before any prediction is seen."""
        return sorted({m for p in self.policies for m in p.models if not any(c in m for c in "*?[")})


def load(path: Path) -> RetrainingPolicy:
    """Read and validate the policy file; a bad file is an error at start, naming what is wrong."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"cannot read the retraining policy {path}: {exc}", field="retraining_policy") from exc
    try:
        return RetrainingPolicy.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidArgument(f"retraining policy {path}: {where}: {first['msg']}", field=where) from exc
