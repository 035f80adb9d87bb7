"""The training data's reference distributions, for the drift service (stored with the version).

Format (the contract between trainer and drift)::

    {"rows": N,
     "features": {"<name>": {"kind": "numeric", "edges": [11 floats], "counts": [10 ints],
                             "sample": [<=1000 floats], "mean": f, "std": f, "min": f, "max": f},
                  "<cat>": {"kind": "categorical", "counts": {"<value>": n}}},
     "prediction": {"kind": "numeric", "edges": [...], "counts": [...], "sample": [...], ...}}

Numeric edges are the deciles of the finite values (so each bin holds about a tenth of the rows; tied
values can make edges repeat), counts are ``np.histogram(values, edges)``, ``missing`` counts NaN and
infinite values, and the sample is drawn with a fixed seed so the same data gives the same document.
``prediction`` is the positive-class score of the trained model on every row of the dataset.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

BINS = 10
SAMPLE = 1000
SAMPLE_SEED = 0


def _f(value: float) -> float:
    return float(np.float64(value))


def numeric(values: np.ndarray) -> dict[str, Any]:
    """Decile histogram, a sample and moments of the finite values (missing and infinite ones are counted)."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    out: dict[str, Any] = {"kind": "numeric"}
    if finite.size == 0:
        return {**out, "edges": [], "counts": [], "sample": [], "mean": None, "std": None, "min": None, "max": None,
                "missing": int(v.size)}
    edges = np.quantile(finite, np.linspace(0.0, 1.0, BINS + 1))
    # np.histogram's convention (left-closed bins, the last closed on both sides), so a reader that bins
    # live values with np.histogram(values, edges) counts them the same way; repeated edges are allowed.
    counts, _ = np.histogram(finite, bins=edges)
    rng = np.random.default_rng(SAMPLE_SEED)
    sample = finite if finite.size <= SAMPLE else finite[np.sort(rng.choice(finite.size, SAMPLE, replace=False))]
    return {
        **out,
        "edges": [_f(e) for e in edges],
        "counts": [int(c) for c in counts],
        "sample": [_f(s) for s in sample],
        "mean": _f(finite.mean()),
        "std": _f(finite.std()),
        "min": _f(finite.min()),
        "max": _f(finite.max()),
        "missing": int(v.size - finite.size),
    }


def categorical(values: Iterable[object]) -> dict[str, Any]:
    counts = Counter("<missing>" if v is None else str(v) for v in values)
    return {"kind": "categorical", "counts": dict(sorted(counts.items()))}


def build(features: dict[str, np.ndarray], scores: np.ndarray, rows: int) -> dict[str, Any]:
    """The reference document: numeric arrays become histograms, object arrays category counts."""
    out: dict[str, Any] = {"rows": int(rows), "features": {}}
    for name, values in features.items():
        arr = np.asarray(values)
        out["features"][name] = categorical(arr.tolist()) if arr.dtype == object else numeric(arr)
    out["prediction"] = numeric(scores)
    return out


def dumps(reference: dict[str, Any]) -> bytes:
    """Canonical JSON bytes (sorted keys), so equal references hash alike."""
    return json.dumps(reference, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
