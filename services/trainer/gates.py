"""Gates a trained model must pass before it is registered: pure checks over arrays and the exported model.

- holdout: the candidate's holdout accuracy against the current production version's on the same rows
  (it may be at most ``tolerance`` below); skipped when there is no production version to compare with
  (not applicable) or when the production version reads a feature this dataset lacks (not evaluated);
- fairness: the gap in a metric (accuracy, or positive rate) across the values of a declared sensitive
  attribute, on the holdout, must stay under ``max_gap``; skipped when no attribute is declared (not
  applicable) or when fewer than two of its values have enough holdout rows (not evaluated);
- robustness: the exported TorchScript module, fed out-of-range inputs (far beyond the training range,
  +-1e30, +-inf, NaN, the FP32 extremes, one row, many rows), must return valid probabilities.

A skipped gate that was not evaluated blocks a production stage (:mod:`mlops.gate_policy`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from mlops.modelguard import ModelPolicy, default_policy

HOLDOUT, FAIRNESS, ROBUSTNESS = "holdout", "fairness", "robustness"
FAIRNESS_METRICS = ("accuracy", "positive_rate")


@dataclass(slots=True)
class Gate:
    name: str
    passed: bool
    reason: str
    skipped: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    #: skipped because there was nothing to check against: blocks nothing (:mod:`mlops.gate_policy`)
    not_applicable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def failed(gates: list[Gate]) -> list[Gate]:
    return [g for g in gates if not g.passed]


def load(artifact: bytes, models: ModelPolicy | None = None) -> torch.jit.ScriptModule:
    """The module, once ``models`` (default: the built-in allowlist) has cleared it: a model artifact is code,
    and production's came from whoever registered it."""
    return (models or default_policy()).load(artifact, map_location="cpu")


def predict(module: torch.jit.ScriptModule, x: np.ndarray) -> np.ndarray:
    """Class probabilities for FP32 rows."""
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


# -- holdout ------------------------------------------------------------------------------------------
def holdout_gate(
    y: np.ndarray,
    candidate_pred: np.ndarray,
    production_pred: np.ndarray | None,
    *,
    production_version: str = "",
    tolerance: float = 0.0,
    skip_reason: str = "",
) -> Gate:
    """``production_pred`` None: skipped; not applicable unless ``skip_reason`` says why a production version
    that exists could not be compared with (then it blocks production)."""
    candidate = float(np.mean(candidate_pred == y)) if len(y) else 0.0
    details: dict[str, Any] = {"candidate_accuracy": candidate, "rows": len(y), "tolerance": tolerance}
    if production_pred is None:
        if skip_reason:
            return Gate(HOLDOUT, True, skip_reason, True, details)
        return Gate(HOLDOUT, True, "no production version to compare with", True, details, not_applicable=True)
    production = float(np.mean(production_pred == y)) if len(y) else 0.0
    details.update(production_accuracy=production, production_version=production_version)
    ok = candidate >= production - tolerance
    relation = ">=" if ok else "<"
    reason = (f"holdout accuracy {candidate:.4f} {relation} production v{production_version} {production:.4f}"
              + (f" - tolerance {tolerance:g}" if tolerance else "") + " on the same holdout")
    return Gate(HOLDOUT, ok, reason, False, details)


# -- fairness -----------------------------------------------------------------------------------------
def fairness_gate(
    y: np.ndarray,
    pred: np.ndarray,
    groups: np.ndarray | None,
    *,
    attribute: str,
    max_gap: float,
    metric: str = "accuracy",
    min_group_rows: int = 10,
) -> Gate:
    details: dict[str, Any] = {"attribute": attribute, "metric": metric, "max_gap": max_gap,
                               "min_group_rows": min_group_rows}
    if not attribute:
        return Gate(FAIRNESS, True, "no sensitive attribute declared", True, details, not_applicable=True)
    if groups is None:
        return Gate(FAIRNESS, False, f"sensitive attribute {attribute!r} is not in the dataset", False, details)
    if metric not in FAIRNESS_METRICS:
        return Gate(FAIRNESS, False, f"unknown fairness metric {metric!r}", False, details)
    per_group: dict[str, dict[str, Any]] = {}
    for g in sorted(set(groups.tolist())):
        mask = groups == g
        n = int(mask.sum())
        per_group[str(g)] = {
            "rows": n,
            "accuracy": float(np.mean(pred[mask] == y[mask])),
            "positive_rate": float(np.mean(pred[mask] == 1)),
        }
    details["groups"] = per_group
    measured = {g: v[metric] for g, v in per_group.items() if v["rows"] >= min_group_rows}
    if len(measured) < 2:
        return Gate(FAIRNESS, True, f"fewer than 2 values of {attribute!r} with {min_group_rows}+ holdout rows",
                    True, details)
    best, worst = max(measured, key=measured.__getitem__), min(measured, key=measured.__getitem__)
    gap = measured[best] - measured[worst]
    details.update(gap=gap, best_group=best, worst_group=worst)
    ok = gap <= max_gap
    reason = (f"{metric} gap across {attribute} {gap:.4f} {'<=' if ok else '>'} {max_gap:g} "
              f"({best}: {measured[best]:.4f}, {worst}: {measured[worst]:.4f})")
    return Gate(FAIRNESS, ok, reason, False, details)


# -- robustness ---------------------------------------------------------------------------------------
def robustness_cases(low: np.ndarray, high: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Named FP32 batches of out-of-range input, built around the training range [low, high] per feature."""
    n = len(low)
    span = np.where(np.isfinite(high - low), high - low, 1.0) + 1.0
    f32 = np.finfo(np.float32)
    rng = np.random.default_rng(seed)
    far = np.stack([low - 10 * span, high + 10 * span])
    extremes = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, f32.max, f32.min, 0.0], dtype=np.float32)
    return {
        "far_below_range": np.tile(far[0], (4, 1)),
        "far_above_range": np.tile(far[1], (4, 1)),
        "plus_1e30": np.full((2, n), 1e30),
        "minus_1e30": np.full((2, n), -1e30),
        "plus_inf": np.full((2, n), np.inf),
        "minus_inf": np.full((2, n), -np.inf),
        "nan": np.full((2, n), np.nan),
        "fp32_max": np.full((2, n), f32.max),
        "one_row_mixed": rng.choice(extremes, size=(1, n)),
        "many_rows_mixed": rng.choice(extremes, size=(4096, n)),
    }


def robustness_gate(artifact: bytes, low: np.ndarray, high: np.ndarray, num_classes: int,
                    models: ModelPolicy | None = None) -> Gate:
    try:
        module = load(artifact, models)
    except Exception as exc:
        return Gate(ROBUSTNESS, False, f"the exported model does not load: {exc}")
    problems: list[str] = []
    cases = robustness_cases(np.nan_to_num(low), np.nan_to_num(high))
    for name, batch in cases.items():
        x = batch.astype(np.float32)
        try:
            out = predict(module, x)
        except Exception as exc:
            problems.append(f"{name}: raised {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        if out.shape != (len(x), num_classes):
            problems.append(f"{name}: output shape {out.shape}, expected {(len(x), num_classes)}")
        elif not np.all(np.isfinite(out)):
            problems.append(f"{name}: non-finite output")
        elif np.any(out < -1e-6) or np.any(out > 1 + 1e-6) or not np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
            problems.append(f"{name}: outputs are not probabilities")
    details = {"cases": list(cases), "problems": problems}
    if problems:
        return Gate(ROBUSTNESS, False, "; ".join(problems), False, details)
    return Gate(ROBUSTNESS, True, f"valid probabilities for {len(cases)} kinds of out-of-range input", False, details)
