"""The gates, pure: holdout against production, fairness across a sensitive attribute, robustness."""

from __future__ import annotations

import io

import numpy as np
import torch

from services.trainer import gates


def test_holdout_gate_compares_with_production_on_the_same_rows() -> None:
    y = np.array([0, 1, 1, 0, 1])
    better = gates.holdout_gate(y, np.array([0, 1, 1, 0, 0]), np.array([0, 1, 0, 0, 0]), production_version="3")
    assert better.passed and not better.skipped
    assert better.details["candidate_accuracy"] == 0.8 and better.details["production_accuracy"] == 0.6
    worse = gates.holdout_gate(y, np.array([0, 1, 0, 0, 0]), y, production_version="3")
    assert not worse.passed and "0.6000 < production v3 1.0000" in worse.reason
    tolerated = gates.holdout_gate(y, np.array([0, 1, 1, 0, 0]), y, production_version="3", tolerance=0.25)
    assert tolerated.passed
    alone = gates.holdout_gate(y, y, None)
    assert alone.passed and alone.skipped and alone.reason == "no production version to compare with"


def test_fairness_gate_measures_the_gap_across_groups() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    groups = np.array(["a", "a", "a", "a", "b", "b", "b", "b"], dtype=object)
    pred = np.array([1, 1, 1, 1, 1, 1, 0, 0])  # a: all right; b: half right
    unfair = gates.fairness_gate(y, pred, groups, attribute="sex", max_gap=0.2, min_group_rows=2)
    assert not unfair.passed and unfair.details["gap"] == 0.5 and unfair.details["worst_group"] == "b"
    assert unfair.details["groups"]["a"] == {"rows": 4, "accuracy": 1.0, "positive_rate": 1.0}
    assert gates.fairness_gate(y, pred, groups, attribute="sex", max_gap=0.5, min_group_rows=2).passed
    rate = gates.fairness_gate(y, pred, groups, attribute="sex", max_gap=0.4, metric="positive_rate", min_group_rows=2)
    assert not rate.passed and rate.details["gap"] == 0.5
    small = gates.fairness_gate(y, pred, groups, attribute="sex", max_gap=0.1, min_group_rows=5)
    assert small.passed and small.skipped
    undeclared = gates.fairness_gate(y, pred, None, attribute="", max_gap=0.1)
    assert undeclared.passed and undeclared.skipped
    missing = gates.fairness_gate(y, pred, None, attribute="sex", max_gap=0.1)
    assert not missing.passed


class _Fragile(torch.nn.Module):
    """No standardisation, no clipping: huge inputs overflow to inf and softmax gives NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1e10, -1e10], [-1e10, 1e10]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=1)


class _Sturdy(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.clamp(torch.nan_to_num(x, nan=0.0), -10.0, 10.0)
        s = torch.sigmoid(z[:, 0:1])
        return torch.cat([1.0 - s, s], dim=1)


def _script(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


def test_robustness_gate_feeds_out_of_range_inputs() -> None:
    low, high = np.array([0.0, -1.0]), np.array([1.0, 1.0])
    sturdy = gates.robustness_gate(_script(_Sturdy()), low, high, 2)
    assert sturdy.passed and len(sturdy.details["cases"]) == 10
    fragile = gates.robustness_gate(_script(_Fragile()), low, high, 2)
    assert not fragile.passed and "non-finite output" in fragile.reason
    wrong_classes = gates.robustness_gate(_script(_Sturdy()), low, high, 3)
    assert not wrong_classes.passed and "output shape" in wrong_classes.reason
    assert not gates.robustness_gate(b"not a model", low, high, 2).passed
    cases = gates.robustness_cases(low, high)
    assert (cases["far_above_range"] > high).all() and (cases["far_below_range"] < low).all()
    assert np.isnan(cases["nan"]).all() and np.isinf(cases["plus_inf"]).all()


class _Leaky(torch.nn.Module):
    """Valid probabilities, and the bytes of a file folded into them: the gate must never run it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leaked = torch.from_file("/etc/hostname", False, 1, dtype=torch.uint8).float()
        return torch.softmax(x * 0 + leaked, dim=1)


def test_the_gates_load_no_artifact_the_model_policy_refuses() -> None:
    low, high = np.array([0.0, -1.0]), np.array([1.0, 1.0])
    refused = gates.robustness_gate(_script(_Leaky()), low, high, 2)
    assert not refused.passed and "aten::from_file" in refused.reason
