"""The training data's reference distributions (the JSON the trainer stores with a model version), parsed
into what the data-drift checks need: bin edges and counts, a sorted sample, the range, category counts.

Format (docs/drift.md, written by services/trainer/reference.py)::

    {"rows": N,
     "features": {"<name>": {"kind": "numeric", "edges": [k+1], "counts": [k], "sample": [<=1000],
                             "mean", "std", "min", "max"},
                  "<cat>": {"kind": "categorical", "counts": {"<value>": n}}},
     "prediction": {"kind": "numeric", "edges": [...], "counts": [...], "sample": [...]}}
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OTHER = "<other>"
MISSING = "<missing>"


class BadReference(ValueError):
    """The document is not in the reference format; the version is treated as having no reference."""


@dataclass(frozen=True)
class NumericRef:
    name: str
    edges: np.ndarray  # k + 1 increasing (repeats allowed) edges
    counts: np.ndarray  # k + 2: below the range, the k bins, above the range
    sample: np.ndarray  # sorted
    minimum: float
    maximum: float
    kind: str = "numeric"

    def summary(self) -> dict[str, Any]:
        return {"kind": self.kind, "bins": int(self.edges.size - 1), "sample": int(self.sample.size),
                "min": self.minimum, "max": self.maximum}


@dataclass(frozen=True)
class CategoricalRef:
    name: str
    categories: tuple[str, ...]  # the reference's values, then OTHER for values it never saw
    counts: np.ndarray  # aligned with categories (OTHER holds 0)
    kind: str = "categorical"

    lookup: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lookup", {c: i for i, c in enumerate(self.categories[:-1])})

    def index(self, value: float) -> int:
        """Position of a live value (features travel as doubles) among the reference's category keys."""
        return self.lookup.get(category_key(value), len(self.categories) - 1)

    def summary(self) -> dict[str, Any]:
        return {"kind": self.kind, "categories": len(self.categories) - 1}


FeatureRef = NumericRef | CategoricalRef


def category_key(value: float) -> str:
    """How a double compares with the reference's string keys: ``3.0`` is ``"3"``, NaN is ``<missing>``."""
    if not math.isfinite(value):
        return MISSING
    if value == int(value):
        return str(int(value))
    return repr(value)


def _normalise_key(key: str) -> str:
    """Reference keys written from floats (``"3.0"``) match live doubles the same way as from ints."""
    try:
        return category_key(float(key))
    except ValueError:
        return key


@dataclass(frozen=True)
class Reference:
    rows: int
    features: dict[str, FeatureRef]
    prediction: NumericRef | None
    sha256: str

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "sha256": self.sha256,
                "features": {k: v.summary() for k, v in self.features.items()},
                "prediction": self.prediction.summary() if self.prediction else None}


def _numeric(name: str, d: dict[str, Any]) -> NumericRef | None:
    edges = np.asarray(d.get("edges") or [], dtype=np.float64)
    counts = np.asarray(d.get("counts") or [], dtype=np.float64)
    sample = np.sort(np.asarray(d.get("sample") or [], dtype=np.float64))
    if edges.size == 0:
        return None  # a feature with no finite values in training: nothing to compare against
    if edges.size < 2 or counts.size != edges.size - 1 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) < 0):
        raise BadReference(f"feature {name!r}: edges must be k+1 increasing numbers and counts k numbers")
    sample = sample[np.isfinite(sample)]
    lo = float(d["min"]) if d.get("min") is not None else float(edges[0])
    hi = float(d["max"]) if d.get("max") is not None else float(edges[-1])
    return NumericRef(name, edges, np.concatenate(([0.0], counts, [0.0])), sample, lo, hi)


def _categorical(name: str, d: dict[str, Any]) -> CategoricalRef:
    raw = d.get("counts")
    if not isinstance(raw, dict) or not raw:
        raise BadReference(f"feature {name!r}: categorical counts must be an object of value -> count")
    merged: dict[str, float] = {}
    for key, n in raw.items():
        k = _normalise_key(str(key))
        merged[k] = merged.get(k, 0.0) + float(n)
    cats = tuple(sorted(merged))
    return CategoricalRef(name, (*cats, OTHER), np.asarray([merged[c] for c in cats] + [0.0]))


def parse(data: bytes) -> Reference:
    """The reference document as typed distributions; raises :class:`BadReference` when malformed."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise BadReference(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("features"), dict):
        raise BadReference('a reference is an object with "features"')
    features: dict[str, FeatureRef] = {}
    try:
        for name, d in doc["features"].items():
            kind = d.get("kind") if isinstance(d, dict) else None
            if kind == "numeric":
                ref = _numeric(name, d)
                if ref is not None:
                    features[name] = ref
            elif kind == "categorical":
                features[name] = _categorical(name, d)
            else:
                raise BadReference(f"feature {name!r}: kind must be numeric or categorical")
        pred = doc.get("prediction")
        prediction = _numeric("prediction", pred) if isinstance(pred, dict) and pred.get("kind") == "numeric" else None
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, BadReference):
            raise
        raise BadReference(str(exc)) from exc
    return Reference(int(doc.get("rows") or 0), features, prediction, hashlib.sha256(data).hexdigest())
