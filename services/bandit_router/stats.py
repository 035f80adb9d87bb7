"""Per-variant statistics: decisions, reward count, sum and sum of squares, and what follows from them
(traffic share, reward mean, its 95% confidence interval, probability of being best).

The interval is Student's t on the sample mean (normal beyond 30 degrees of freedom); it needs at
least two rewards. Probability of being best draws each mean from its normal approximation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Two-sided 95% critical values of Student's t for 1..30 degrees of freedom.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959964


def t_critical_95(df: int) -> float:
    """Two-sided 95% critical value for ``df`` degrees of freedom (``df`` >= 1)."""
    if df < 1:
        raise ValueError("degrees of freedom must be >= 1")
    return _T975[df - 1] if df <= len(_T975) else _Z975


@dataclass(frozen=True, slots=True)
class VariantStats:
    decisions: int = 0
    rewards: int = 0
    reward_sum: float = 0.0
    reward_sumsq: float = 0.0

    @property
    def mean(self) -> float | None:
        return self.reward_sum / self.rewards if self.rewards else None

    @property
    def variance(self) -> float | None:
        """Unbiased sample variance (clamped at 0 against rounding), from two rewards on."""
        if self.rewards < 2:
            return None
        n = self.rewards
        var = (self.reward_sumsq - self.reward_sum * self.reward_sum / n) / (n - 1)
        return max(var, 0.0)

    def ci95(self) -> tuple[float, float] | None:
        mean, var = self.mean, self.variance
        if mean is None or var is None:
            return None
        half = t_critical_95(self.rewards - 1) * math.sqrt(var / self.rewards)
        return (mean - half, mean + half)


def traffic_shares(stats: Sequence[VariantStats]) -> list[float]:
    """Each variant's fraction of all decisions (zeros before the first decision)."""
    total = sum(s.decisions for s in stats)
    return [s.decisions / total if total else 0.0 for s in stats]


def probability_best(stats: Sequence[VariantStats], draws: int = 4000, seed: int = 0) -> list[float | None]:
    """P(variant has the highest mean reward), among variants with at least two rewards; None for others."""
    eligible = [i for i, s in enumerate(stats) if s.rewards >= 2]
    out: list[float | None] = [None] * len(stats)
    if not eligible:
        return out
    if len(eligible) == 1:
        out[eligible[0]] = 1.0
        return out
    rng = np.random.default_rng(seed)
    means = np.array([stats[i].mean for i in eligible], dtype=np.float64)
    scales = np.array([math.sqrt((stats[i].variance or 0.0) / stats[i].rewards) for i in eligible])
    samples = rng.normal(means, np.maximum(scales, 1e-12), size=(draws, len(eligible)))
    wins = np.bincount(samples.argmax(axis=1), minlength=len(eligible)) / draws
    for j, i in enumerate(eligible):
        out[i] = float(wins[j])
    return out
