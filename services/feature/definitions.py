"""Declarative feature definitions (YAML in the repo): feature views over streams, pass-through fields
and aggregations; and the operations one event applies to its entity's online features."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from mlops.errors import InvalidArgument

AggFn = Literal["count", "sum", "mean", "min", "max", "last"]


class Aggregation(BaseModel):
    name: str
    fn: AggFn
    field: str | None = None


class FeatureView(BaseModel):
    name: str
    stream: str = "*"
    entity: str = "entity_id"
    passthrough: list[str] | Literal["*"] = "*"
    ttl_s: int = 0
    aggregations: list[Aggregation] = Field(default_factory=list)

    def applies_to(self, stream: str) -> bool:
        return self.stream in ("*", stream)


class Definitions(BaseModel):
    views: list[FeatureView]
    digest: str = ""

    @classmethod
    def load(cls, path: Path) -> Definitions:
        text = path.read_text()
        try:
            raw = yaml.safe_load(text) or {}
            defs = cls.model_validate(raw)
        except (yaml.YAMLError, ValidationError) as exc:
            raise InvalidArgument(f"feature definitions in {path} are invalid: {exc}", field="views") from exc
        for view in defs.views:
            for agg in view.aggregations:
                if agg.fn != "count" and not agg.field:
                    raise InvalidArgument(f"aggregation {agg.name} ({agg.fn}) needs a field", field="field")
        defs.digest = hashlib.sha256(text.encode()).hexdigest()
        return defs


Op = tuple[str, str, str]  # (operation, hash field, value)


def operations(defs: Definitions, stream: str, fields: dict[str, Any]) -> list[Op]:
    """What one event does to its entity's online features, as ops the Redis script applies atomically."""
    ops: list[Op] = []
    for view in defs.views:
        if not view.applies_to(stream):
            continue
        names = fields.keys() if view.passthrough == "*" else [f for f in view.passthrough if f in fields]
        ops.extend(("last", name, json.dumps(fields[name])) for name in names)
        for agg in view.aggregations:
            if agg.fn == "count":
                ops.append(("incr", agg.name, "1"))
                continue
            value = fields.get(agg.field or "")
            if value is None:
                continue
            if agg.fn == "last":
                ops.append(("last", agg.name, json.dumps(value)))
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if agg.fn == "sum":
                ops.append(("incr", agg.name, repr(float(value))))
            elif agg.fn == "mean":
                ops.append(("incr", f"{agg.name}__sum", repr(float(value))))
                ops.append(("incr", f"{agg.name}__n", "1"))
            else:
                ops.append((agg.fn, agg.name, repr(float(value))))
    return ops


def max_ttl(defs: Definitions, stream: str) -> int:
    ttls = [v.ttl_s for v in defs.views if v.applies_to(stream)]
    return 0 if not ttls or 0 in ttls else max(ttls)
