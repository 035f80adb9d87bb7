"""What a job will actually train on, resolved when it runs.

A spec with empty stream, features or label means "as the current production version was trained": the
registry's production version names its dataset (and its signature the features), and the feature
service's card of that dataset names the stream and label. The gate declarations (sensitive attribute,
fairness threshold) carry over from the production version's run when the spec does not set them, so a
model declared once keeps its fairness gate through every retraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from mlops.v1 import feature_pb2, registry_pb2
from services.trainer.jobs import JobSpec


class PlanError(Exception):
    """The job cannot be planned (for example, nothing to inherit from); the message says why."""


class DatasetCards(Protocol):
    async def get_dataset(self, dataset_id: str) -> feature_pb2.DatasetVersion: ...


class Versions(Protocol):
    async def resolve_alias(self, model: str, alias: str) -> registry_pb2.ModelVersion | None: ...


class Runs(Protocol):
    async def get(self, run_id: str) -> dict[str, Any]: ...


@dataclass(slots=True)
class Plan:
    stream: str
    features: list[str]
    label: str
    recent_rows: int
    attribute: str
    max_gap: float
    processes: int
    production: registry_pb2.ModelVersion | None = None
    inherited_from: str = ""  # "model/version" whose lineage filled the spec's gaps
    inherited: dict[str, str] = field(default_factory=dict)

    @property
    def dataset_features(self) -> list[str]:
        """The dataset's columns: the model's features, plus the sensitive attribute for the fairness gate."""
        extra = [self.attribute] if self.attribute and self.attribute not in self.features else []
        return [*self.features, *extra]


async def make_plan(
    spec: JobSpec, versions: Versions, cards: DatasetCards, runs: Runs, *, default_max_gap: float,
    default_processes: int,
) -> Plan:
    production = await versions.resolve_alias(spec.model, "production")
    stream, features, label = spec.stream, list(spec.features), spec.label
    attribute, max_gap = spec.sensitive_attribute, spec.fairness_max_gap
    inherited: dict[str, str] = {}
    inherited_from = ""
    if spec.inherits and production is None:
        raise PlanError(f"model {spec.model!r} has no production version to take stream, features and label "
                        "from; give them in the request")
    if production is not None:
        params = (await runs.get(production.run_id)).get("params", {}) if production.run_id else {}
        if spec.inherits:
            card = await cards.get_dataset(production.dataset_id) if production.dataset_id else None
            if not stream:
                stream = (card.stream if card else "") or params.get("stream", "")
                inherited["stream"] = stream
            if not label:
                label = (card.label if card else "") or params.get("label", "")
                inherited["label"] = label
            if not features:
                features = list(production.signature.features) or (list(card.features) if card else [])
                inherited["features"] = ",".join(features)
            inherited_from = f"{production.model}/{production.version}"
        if not attribute and params.get("sensitive_attribute"):
            attribute = params["sensitive_attribute"]
            inherited["sensitive_attribute"] = attribute
            max_gap = max_gap or float(params.get("fairness_max_gap") or 0.0)
    if not stream or not features or not label:
        raise PlanError(f"production version {inherited_from} has no complete lineage (stream {stream!r}, "
                        f"features {features}, label {label!r})")
    if label in features:
        raise PlanError(f"label {label!r} is also a feature")
    if attribute == label:
        raise PlanError("the sensitive attribute cannot be the label")
    return Plan(stream=stream, features=features, label=label, recent_rows=spec.recent_rows, attribute=attribute,
                max_gap=max_gap or default_max_gap, processes=spec.processes or default_processes,
                production=production, inherited_from=inherited_from, inherited=inherited)
