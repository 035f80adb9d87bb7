"""Synthetic streams with known change points, shared by the drift benchmark and the drift tests.

- :func:`loss_stream`: the per-example loss of a model trained on river's Agrawal generator (concept 0)
  and then frozen, on a stream whose concept changes at ``change_at`` (abruptly, or gradually over
  ``width`` events with river's ``ConceptDriftStream``): what the drift service's concept check sees.
- :func:`score_stream`: positive-class scores whose mean moves (prediction drift), from numpy.
- :func:`feature_rows` / :func:`reference_for`: numeric feature rows with a shift in chosen features, and
  the reference document the trainer would have written for the stationary part.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

Loss = Literal["log_loss", "zero_one"]

#: Probabilities are clipped here before the log, as the drift service does.
P_FLOOR = 1e-3


@functools.lru_cache(maxsize=4)
def _model(seed: int) -> Any:
    """A Hoeffding tree trained on 5,000 examples of Agrawal concept 0 with 5% label noise, then frozen."""
    from river import tree
    from river.datasets import synth

    model = tree.HoeffdingTreeClassifier(grace_period=100)
    for x, y in synth.Agrawal(classification_function=0, perturbation=0.05, seed=seed).take(5000):
        model.learn_one(x, y)
    return model


def _examples(n: int, change_at: int | None, width: int, after: int, seed: int) -> Iterator[tuple[dict, int]]:
    from river.datasets import synth

    before = synth.Agrawal(classification_function=0, perturbation=0.05, seed=seed + 1)
    if change_at is None:
        return before.take(n)
    drifted = synth.Agrawal(classification_function=after, perturbation=0.05, seed=seed + 2)
    if width <= 1:
        return itertools.chain(before.take(change_at), drifted.take(n - change_at))
    # river's ConceptDriftStream switches with probability sigmoid(4 (t - position) / width).
    stream = synth.ConceptDriftStream(stream=before, drift_stream=drifted, position=change_at, width=width,
                                      seed=seed + 3)
    return stream.take(n)


def loss_stream(n: int, change_at: int | None = None, *, width: int = 1, after: int = 4, seed: int = 7,
                loss: Loss = "log_loss") -> np.ndarray:
    """Per-example loss of the frozen model on ``n`` Agrawal examples; the concept changes at ``change_at``."""
    model = _model(seed)
    out = np.empty(n)
    for i, (x, y) in enumerate(_examples(n, change_at, width, after, seed)):
        proba = model.predict_proba_one(x)
        if loss == "zero_one":
            out[i] = 0.0 if max(proba, key=proba.get) == y else 1.0
        else:
            out[i] = -math.log(min(max(proba.get(y, 0.0), P_FLOOR), 1.0 - P_FLOOR))
    return out


def score_stream(n: int, change_at: int | None = None, *, width: int = 1, before: float = 0.3,
                 after: float = 0.45, sd: float = 0.12, seed: int = 7) -> np.ndarray:
    """Scores in [0, 1] around ``before``, moving to ``after`` at ``change_at`` (linearly over ``width``)."""
    rng = np.random.default_rng(seed)
    mean = np.full(n, before)
    if change_at is not None:
        t = np.arange(n)
        ramp = np.clip((t - change_at) / max(width, 1) + (0.5 if width > 1 else 1.0), 0.0, 1.0)
        mean = before + (after - before) * ramp
    return np.clip(rng.normal(mean, sd), 0.0, 1.0)


def feature_rows(n: int, n_features: int = 20, change_at: int | None = None, *, shifted: tuple[int, ...] = (0,),
                 shift: float = 1.0, seed: int = 7) -> np.ndarray:
    """``n`` rows of standard normal features; from ``change_at`` on, the ``shifted`` ones move by ``shift`` sd."""
    rows = np.random.default_rng(seed).normal(size=(n, n_features))
    if change_at is not None:
        rows[change_at:, list(shifted)] += shift
    return rows


def feature_names(n_features: int) -> list[str]:
    return [f"f{i:02d}" for i in range(n_features)]


def reference_for(rows: np.ndarray, scores: np.ndarray | None = None, seed: int = 0) -> dict[str, Any]:
    """The reference document (trainer's format: decile edges, counts, a 1,000-value sample) of ``rows``."""
    rng = np.random.default_rng(seed)

    def numeric(v: np.ndarray) -> dict[str, Any]:
        edges = np.quantile(v, np.linspace(0, 1, 11))
        counts, _ = np.histogram(v, bins=edges)
        sample = v if v.size <= 1000 else v[np.sort(rng.choice(v.size, 1000, replace=False))]
        return {"kind": "numeric", "edges": edges.tolist(), "counts": counts.tolist(), "sample": sample.tolist(),
                "mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}

    names = feature_names(rows.shape[1])
    doc: dict[str, Any] = {"rows": int(rows.shape[0]),
                           "features": {name: numeric(rows[:, i]) for i, name in enumerate(names)}}
    if scores is not None:
        doc["prediction"] = numeric(np.asarray(scores, dtype=np.float64))
    return doc
