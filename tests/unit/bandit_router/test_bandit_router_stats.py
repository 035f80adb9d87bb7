"""Reward statistics: mean, variance, 95% intervals (Student t, Wilson for 0/1 rewards), traffic shares,
probability of being best (normal and Beta), latency quantiles, estimated regret, parsing the Redis hashes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from services.bandit_router.stats import (
    LATENCY_EDGES_MS,
    VariantStats,
    estimated_regret,
    latency_bucket,
    latency_quantile,
    probability_best,
    probability_best_beta,
    t_critical_95,
    traffic_shares,
    wilson95,
)
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
    constant = _from([0.7] * 10)
    assert constant.ci95() == (pytest.approx(0.7), pytest.approx(0.7))  # rounding never makes variance < 0


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


def test_binary_rewards_get_wilson_intervals_that_do_not_collapse() -> None:
    all_ones = _from([1.0] * 10)
    assert all_ones.binary and not _from([0.5, 1.0]).binary
    low, high = all_ones.ci95()  # type: ignore[misc]
    assert high == pytest.approx(1.0) and 0.6 < low < 0.75  # Wilson: about [0.72, 1]
    ref = sps.binomtest(30, 100).proportion_ci(0.95, method="wilson")
    assert wilson95(30, 100) == (pytest.approx(ref.low, abs=1e-6), pytest.approx(ref.high, abs=1e-6))


def test_parse_stats_from_redis_hash() -> None:
    raw = {b"a|decisions": b"4", b"a|rewards": b"2", b"a|sum": b"1.5", b"a|sumsq": b"1.25", b"b|decisions": b"1",
           b"a|settled": b"3", b"a|expired": b"1", b"a|errors": b"2", b"b|shadows": b"5", b"a|gen": b"7"}
    a, b, c = parse_stats(raw, ["a", "b", "c"])
    assert a == VariantStats(4, 2, 1.5, 1.25, settled=3, expired=1, errors=2)
    assert a.pending == 1 and a.error_rate == pytest.approx(2 / 6)
    assert b == VariantStats(1, 0, 0.0, 0.0, shadows=5) and c == VariantStats()
    assert math.isclose(a.mean or 0, 0.75)
    with_latency = parse_stats(raw, ["a"], {b"a|0": b"3", b"a|4": b"1"})[0]
    assert with_latency.latency[:5] == (3, 0, 0, 0, 1) and len(with_latency.latency) == len(LATENCY_EDGES_MS) + 1


def test_latency_histogram() -> None:
    assert latency_bucket(0.1) == 0 and latency_bucket(0.5) == 0 and latency_bucket(0.6) == 1
    assert latency_bucket(1e9) == len(LATENCY_EDGES_MS)
    counts = [0] * (len(LATENCY_EDGES_MS) + 1)
    for ms in [0.8] * 98 + [40.0, 40.0]:
        counts[latency_bucket(ms)] += 1
    assert latency_quantile(counts, 0.5) == 1.0
    assert latency_quantile(counts, 0.99) == 50.0  # 40 ms falls in the (30, 50] bucket: its upper edge
    assert latency_quantile([0] * 5, 0.99) is None


def test_beta_probability_best_and_regret() -> None:
    strong, weak = VariantStats(200, 200, 150.0, 150.0), VariantStats(200, 200, 100.0, 100.0)
    assert probability_best_beta([strong, weak])[0] > 0.99
    p = probability_best_beta([strong, weak, VariantStats()])  # an untried arm keeps its prior: Beta(1, 1)
    assert sum(p) == pytest.approx(1.0) and 0.2 < p[2] < 0.3 and p[1] < 0.01
    assert probability_best_beta([VariantStats()]) == [1.0]
    regret = estimated_regret([strong, weak, VariantStats(decisions=3)], [0.75, 0.5, None])
    assert regret == [0.0, pytest.approx(50.0), None]
    assert estimated_regret([weak], [None]) == [None]
