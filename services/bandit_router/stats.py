"""Per-variant statistics and what follows from them: traffic share, reward mean and its 95% interval,
probability of being best, estimated regret, error rate and latency percentiles.

Everything here is pure (no I/O) so that the policies, the guardrails and the live state share one
arithmetic, and the simulations and unit tests exercise exactly what the service runs.

- The interval is Wilson's score interval when every reward so far was 0 or 1 (a conversion rate: the
  Student t interval collapses to a point on all-0 or all-1 samples), else Student's t on the sample mean
  (normal beyond 30 degrees of freedom); it needs at least two rewards.
- Probability of being best draws each variant's mean from its posterior: Beta for 0/1 rewards (via
  :func:`probability_best_beta`), else the normal approximation of the sample mean.
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

#: Upper edges (ms) of the latency histogram's buckets; the last bucket is open-ended.
LATENCY_EDGES_MS: tuple[float, ...] = (
    0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000, 10000,
)  # fmt: skip


def t_critical_95(df: int) -> float:
    """Two-sided 95% critical value for ``df`` degrees of freedom (``df`` >= 1)."""
    if df < 1:
        raise ValueError("degrees of freedom must be >= 1")
    return _T975[df - 1] if df <= len(_T975) else _Z975


def latency_bucket(ms: float) -> int:
    """Index of the histogram bucket holding a latency of ``ms`` milliseconds."""
    for i, edge in enumerate(LATENCY_EDGES_MS):
        if ms <= edge:
            return i
    return len(LATENCY_EDGES_MS)


def latency_quantile(counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a latency histogram, as its bucket's upper edge (conservative).

    The open-ended last bucket reports twice the last edge. None for an empty histogram.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cumulative = 0
    for i, c in enumerate(counts):
        cumulative += c
        if cumulative >= rank and c > 0:
            return LATENCY_EDGES_MS[i] if i < len(LATENCY_EDGES_MS) else 2 * LATENCY_EDGES_MS[-1]
    return 2 * LATENCY_EDGES_MS[-1]


@dataclass(frozen=True, slots=True)
class VariantStats:
    """Counters of one variant, as kept in Redis (all of them change atomically per event).

    ``decisions``: requests it served; ``settled``: decisions whose reward came or timed out (so
    ``decisions - settled`` are awaiting a reward); ``expired``: decisions whose reward never came;
    ``errors``: requests it was picked for and failed (another variant answered); ``shadows``: mirrored
    requests it answered in the background, ``shadow_errors`` those that failed; ``latency``: histogram
    counts over :data:`LATENCY_EDGES_MS` of its live (non-shadow) inference calls.
    """

    decisions: int = 0
    rewards: int = 0
    reward_sum: float = 0.0
    reward_sumsq: float = 0.0
    settled: int = 0
    expired: int = 0
    errors: int = 0
    shadows: int = 0
    shadow_errors: int = 0
    latency: tuple[int, ...] = ()

    @property
    def mean(self) -> float | None:
        return self.reward_sum / self.rewards if self.rewards else None

    @property
    def pending(self) -> int:
        return max(0, self.decisions - self.settled)

    @property
    def binary(self) -> bool:
        """Whether every reward so far was 0 or 1 (for r in [0, 1], r^2 == r only at 0 and 1)."""
        return self.rewards > 0 and 0.0 <= self.reward_sum <= self.rewards and abs(
            self.reward_sumsq - self.reward_sum
        ) < 1e-9 * max(1.0, self.reward_sum)

    @property
    def variance(self) -> float | None:
        """Unbiased sample variance (clamped at 0 against rounding), from two rewards on."""
        if self.rewards < 2:
            return None
        n = self.rewards
        var = (self.reward_sumsq - self.reward_sum * self.reward_sum / n) / (n - 1)
        return max(var, 0.0)

    @property
    def error_rate(self) -> float | None:
        attempts = self.decisions + self.errors
        return self.errors / attempts if attempts else None

    def latency_ms(self, q: float) -> float | None:
        return latency_quantile(self.latency, q)

    def ci95(self) -> tuple[float, float] | None:
        mean, var = self.mean, self.variance
        if mean is None or var is None:
            return None
        if self.binary:
            return wilson95(self.reward_sum, self.rewards)
        half = t_critical_95(self.rewards - 1) * math.sqrt(var / self.rewards)
        return (mean - half, mean + half)


def wilson95(successes: float, n: int) -> tuple[float, float]:
    """Wilson's score interval for a proportion."""
    z = _Z975
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def traffic_shares(stats: Sequence[VariantStats]) -> list[float]:
    """Each variant's fraction of all decisions (zeros before the first decision)."""
    total = sum(s.decisions for s in stats)
    return [s.decisions / total if total else 0.0 for s in stats]


def beta_posterior(s: VariantStats, prior_alpha: float = 1.0, prior_beta: float = 1.0) -> tuple[float, float]:
    """Beta(alpha, beta) after ``s``'s rewards, read as Bernoulli trials (rewards clipped into [0, 1])."""
    successes = min(max(s.reward_sum, 0.0), float(s.rewards))
    return prior_alpha + successes, prior_beta + s.rewards - successes


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


def probability_best_beta(
    stats: Sequence[VariantStats],
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
    draws: int = 4000,
    seed: int = 0,
) -> list[float]:
    """P(variant has the highest success rate) under independent Beta posteriors (every variant counts)."""
    if not stats:
        return []
    if len(stats) == 1:
        return [1.0]
    rng = np.random.default_rng(seed)
    params = np.array([beta_posterior(s, prior_alpha, prior_beta) for s in stats], dtype=np.float64)
    samples = rng.beta(params[:, 0], params[:, 1], size=(draws, len(stats)))
    wins = np.bincount(samples.argmax(axis=1), minlength=len(stats)) / draws
    return [float(w) for w in wins]


def estimated_regret(stats: Sequence[VariantStats], means: Sequence[float | None]) -> list[float | None]:
    """Per variant: its decisions times how far its (estimated) mean reward is below the best one.

    The sum is the reward the endpoint gave up by not always serving the best variant, as far as the
    estimates know now. None for variants without an estimate.
    """
    known = [m for m in means if m is not None]
    if not known:
        return [None] * len(stats)
    best = max(known)
    return [None if m is None else s.decisions * (best - m) for s, m in zip(stats, means, strict=True)]
