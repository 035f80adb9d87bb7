"""Reward statistics: mean, variance, Student-t 95% interval, traffic shares, probability of being best."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from services.bandit_router.stats import VariantStats, probability_best, t_critical_95, traffic_shares
from services.bandit_router.store import parse_stats


def _from(values: list[float], decisions: int = 0) -> VariantStats:
    return VariantStats(
        decisions=decisions,
        rewards=len(values),
        reward_sum=float(sum(values)),
        reward_sumsq=float(sum(v * v for v in values)),
    )


@pytest.mark.parametrize("df", [1, 2, 5, 10, 29, 30])
def test_t_table_matches_scipy(df: int) -> None:
    assert t_critical_95(df) == pytest.approx(sps.t.ppf(0.975, df), abs=1e-3)


def test_large_samples_use_the_normal_quantile() -> None:
    assert t_critical_95(1000) == pytest.approx(sps.norm.ppf(0.975), abs=1e-5)


def test_mean_variance_and_ci_match_direct_computation() -> None:
    values = list(np.random.default_rng(3).normal(0.4, 0.2, size=25))
    s = _from(values)
    assert s.mean == pytest.approx(np.mean(values))
    assert s.variance == pytest.approx(np.var(values, ddof=1))
    low, high = s.ci95()  # type: ignore[misc]
    lo_ref, hi_ref = sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert low == pytest.approx(lo_ref, abs=1e-4)
    assert high == pytest.approx(hi_ref, abs=1e-4)


def test_undefined_statistics() -> None:
    assert VariantStats().mean is None and VariantStats().ci95() is None
    one = _from([0.7])
    assert one.mean == pytest.approx(0.7) and one.ci95() is None
    constant = _from([1.0] * 10)
    assert constant.ci95() == (pytest.approx(1.0), pytest.approx(1.0))  # rounding never makes variance < 0


def test_ci_covers_the_true_mean_about_95_percent() -> None:
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(2000):
        low, high = _from(list(rng.binomial(1, 0.3, size=40).astype(float))).ci95()  # type: ignore[misc]
        hits += low <= 0.3 <= high
    assert 0.91 < hits / 2000 < 0.98


def test_traffic_shares() -> None:
    assert traffic_shares([VariantStats(decisions=3), VariantStats(decisions=1)]) == [0.75, 0.25]
    assert traffic_shares([VariantStats(), VariantStats()]) == [0.0, 0.0]


def test_probability_best() -> None:
    good, bad, empty = _from([1.0, 0.9, 1.0, 0.95] * 10), _from([0.1, 0.2, 0.0, 0.15] * 10), VariantStats()
    p = probability_best([good, bad, empty])
    assert p[0] == pytest.approx(1.0) and p[1] == pytest.approx(0.0) and p[2] is None
    tie = probability_best([_from([0, 1] * 50), _from([0, 1] * 50)])
    assert sum(tie) == pytest.approx(1.0)  # type: ignore[arg-type]
    assert all(0.4 < x < 0.6 for x in tie)  # type: ignore[operator]
    assert probability_best([good, empty]) == [1.0, None]


def test_parse_stats_from_redis_hash() -> None:
    raw = {b"a|decisions": b"4", b"a|rewards": b"2", b"a|sum": b"1.5", b"a|sumsq": b"1.25", b"b|decisions": b"1"}
    a, b, c = parse_stats(raw, ["a", "b", "c"])
    assert a == VariantStats(4, 2, 1.5, 1.25)
    assert b == VariantStats(1, 0, 0.0, 0.0) and c == VariantStats()
    assert math.isclose(a.mean or 0, 0.75)
