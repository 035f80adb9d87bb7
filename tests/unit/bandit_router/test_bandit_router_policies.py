"""Traffic policies one by one: weighted choice, consistent hashing, canary split, shadow roles, the
bandits' choices on given statistics, LinUCB, parameter validation and the type registry."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np
import pytest

from mlops.errors import InvalidArgument
from services.bandit_router.policies import (
    Arms,
    CanaryPolicy,
    FixedPolicy,
    LinearState,
    LinUCBPolicy,
    Policy,
    ShadowPolicy,
    StickyPolicy,
    pick_by_weight,
    unit_point,
)
from services.bandit_router.spec import VariantSpec
from services.bandit_router.stats import VariantStats


def _variants(*weights: float) -> tuple[VariantSpec, ...]:
    return tuple(VariantSpec(name=f"v{i}", model="m", version=str(i + 1), weight=w) for i, w in enumerate(weights))


def _arms(variants: Any, stats: Any = None, unit: str | None = None, **kw: Any) -> Arms:
    return Arms("ep", variants, stats if stats is not None else [VariantStats()] * len(variants), unit, **kw)


def _stats(decisions: int, rewards: int, total: float) -> VariantStats:
    return VariantStats(decisions, rewards, total, total)  # 0/1 rewards: sum of squares == sum


def test_pick_by_weight_boundaries() -> None:
    assert pick_by_weight([1, 1], 0.0) == 0
    assert pick_by_weight([1, 1], 0.4999) == 0
    assert pick_by_weight([1, 1], 0.5) == 1
    assert pick_by_weight([1, 1], 0.999999) == 1
    assert pick_by_weight([0, 1, 0], 0.0) == 1
    assert pick_by_weight([1, 0], 0.99999999) == 0  # a zero weight is never picked, even at the edge
    with pytest.raises(InvalidArgument):
        pick_by_weight([0, 0], 0.3)


def test_fixed_split_follows_weights() -> None:
    policy = Policy.create("fixed")
    variants = _variants(0.7, 0.2, 0.1, 0.0)
    rng = random.Random(7)
    counts = Counter(policy.choose(_arms(variants), rng) for _ in range(20_000))
    assert counts[3] == 0
    for i, w in enumerate((0.7, 0.2, 0.1)):
        assert abs(counts[i] / 20_000 - w) < 0.015
    assert policy.live(variants) == [0, 1, 2]  # weight 0 pauses a variant


def test_fixed_is_sticky_per_unit_and_still_follows_weights() -> None:
    policy = FixedPolicy()
    variants = _variants(0.25, 0.75)
    first = {f"user-{u}": policy.choose(_arms(variants, unit=f"user-{u}"), random.Random(0)) for u in range(4000)}
    again = {u: policy.choose(_arms(variants, unit=u), random.Random(99)) for u in first}
    assert first == again
    share = sum(1 for v in first.values() if v == 1) / len(first)
    assert abs(share - 0.75) < 0.03


def test_sticky_keeps_each_unit_in_one_arm_and_moves_only_what_must_move() -> None:
    policy = StickyPolicy()
    three = _variants(1, 1, 2)
    units = [f"user-{u}" for u in range(6000)]
    assigned = {u: three[policy.choose(_arms(three, unit=u), random.Random(i))].name for i, u in enumerate(units)}
    for i, u in enumerate(units[:500]):  # the same unit, any replica, any time: the same arm
        assert three[policy.choose(_arms(three, unit=u), random.Random(i + 1))].name == assigned[u]
    shares = Counter(assigned.values())
    assert abs(shares["v2"] / len(units) - 0.5) < 0.03 and abs(shares["v0"] / len(units) - 0.25) < 0.03
    # Adding an arm takes about its share of units, every one of them from the others; nobody else moves.
    four = (*three, VariantSpec("v3", "m", "4", weight=4))
    after = {u: four[policy.choose(_arms(four, unit=u), random.Random(0))].name for u in units}
    moved = [u for u in units if after[u] != assigned[u]]
    assert all(after[u] == "v3" for u in moved)
    assert abs(len(moved) / len(units) - 0.5) < 0.03
    # Removing an arm moves only its own units.
    two = (three[0], three[2])
    removed = {u: two[policy.choose(_arms(two, unit=u), random.Random(0))].name for u in units}
    assert all(removed[u] == assigned[u] for u in units if assigned[u] != "v1")


def test_unit_point_is_stable_uniform_and_per_endpoint() -> None:
    assert unit_point("ep", "u1") == unit_point("ep", "u1")
    assert unit_point("ep", "u1") != unit_point("other", "u1")
    points = [unit_point("ep", str(i)) for i in range(5000)]
    assert all(0.0 <= p < 1.0 for p in points)
    assert abs(sum(points) / len(points) - 0.5) < 0.02


def test_canary_splits_by_percent_stickily_and_stops_when_rolled_back() -> None:
    variants = (VariantSpec("stable", "m", "1"), VariantSpec("new", "m", "2"))
    policy = Policy.create("canary", {"primary": "stable", "canary": "new", "percent": 20})
    assert isinstance(policy, CanaryPolicy) and policy.roles(variants) == ("stable", "new")
    picks = Counter(policy.choose(_arms(variants), random.Random(i)) for i in range(10_000))
    assert abs(picks[1] / 10_000 - 0.2) < 0.02
    per_unit = {u: policy.choose(_arms(variants, unit=u), random.Random(0)) for u in map(str, range(2000))}
    assert per_unit == {u: policy.choose(_arms(variants, unit=u), random.Random(5)) for u in per_unit}
    wider = Policy.create("canary", {"percent": 50})  # defaults: first variant primary, second canary
    widened = {u: wider.choose(_arms(variants, unit=u), random.Random(0)) for u in per_unit}
    assert all(widened[u] == 1 for u, v in per_unit.items() if v == 1)  # raising the percent keeps canary users
    assert policy.target_shares(_arms(variants)) == [pytest.approx(0.8), pytest.approx(0.2)]
    rolled = Policy.create("canary", {"percent": 20, "rolled_back": {"reason": "errors"}})
    assert rolled.live(variants) == [0]
    assert {rolled.choose(_arms(variants), random.Random(i)) for i in range(200)} == {0}
    assert rolled.target_shares(_arms(variants)) == [1.0, 0.0]


def test_shadow_policy_serves_the_primary_and_mirrors_the_rest() -> None:
    variants = _variants(1, 1, 1)
    policy = Policy.create("shadow", {"primary": "v1"})
    assert isinstance(policy, ShadowPolicy)
    assert policy.live(variants) == [1] and policy.shadow_indexes(variants) == [0, 2]
    assert policy.choose(_arms([variants[1]]), random.Random(0)) == 0
    explicit = Policy.create("shadow", {"shadows": ["v2"]})
    assert explicit.live(variants) == [0] and explicit.shadow_indexes(variants) == [2]
    ab_with_shadow = Policy.create("fixed", {"shadows": ["v2"], "shadow_fraction": 0.25})
    assert ab_with_shadow.live(variants) == [0, 1] and ab_with_shadow.experiment.shadow_fraction == 0.25
    with pytest.raises(InvalidArgument):
        Policy.create("shadow", {"primary": "v0", "shadows": ["v0"]}).check_variants(variants)


def test_epsilon_greedy_explores_epsilon_and_exploits_the_rest() -> None:
    variants = _variants(1, 1, 1)
    stats = [_stats(100, 100, 10), _stats(100, 100, 60), _stats(100, 100, 30)]
    policy = Policy.create("epsilon_greedy", {"epsilon": 0.3})
    picks = Counter(policy.choose(_arms(variants, stats), random.Random(i)) for i in range(6000))
    assert abs(picks[1] / 6000 - (0.7 + 0.1)) < 0.03 and abs(picks[0] / 6000 - 0.1) < 0.02
    assert policy.target_shares(_arms(variants, stats)) == [pytest.approx(0.1), pytest.approx(0.8), pytest.approx(0.1)]
    fresh = [_stats(100, 100, 10), VariantStats(), _stats(5, 0, 0)]
    assert policy.choose(_arms(variants, fresh), random.Random(0)) == 1  # never served: served first


def test_ucb1_prefers_the_unserved_then_the_upper_bound() -> None:
    policy = Policy.create("ucb1")
    variants = _variants(1, 1)
    assert policy.choose(_arms(variants, [_stats(10, 10, 9), VariantStats()]), random.Random(0)) == 1
    # Same mean, fewer decisions: the wider bound wins.
    assert policy.choose(_arms(variants, [_stats(1000, 1000, 500), _stats(10, 10, 5)]), random.Random(0)) == 1
    # A clearly better arm with plenty of data wins.
    assert policy.choose(_arms(variants, [_stats(1000, 1000, 900), _stats(1000, 1000, 100)]), random.Random(0)) == 0


def test_thompson_bernoulli_and_gaussian() -> None:
    variants = _variants(1, 1)
    bern = Policy.create("thompson")
    stats = [_stats(300, 300, 30), _stats(300, 300, 90)]
    picks = Counter(bern.choose(_arms(variants, stats), random.Random(i)) for i in range(500))
    assert picks[1] > 495
    p = bern.prob_best(stats)
    assert p[1] == pytest.approx(1.0, abs=1e-3)
    assert bern.means(stats) == [pytest.approx(31 / 302), pytest.approx(91 / 302)]
    rng = np.random.default_rng(0)
    revenue = [rng.normal(10, 5, 400), rng.normal(12, 5, 400)]
    gstats = [VariantStats(400, 400, float(r.sum()), float((r * r).sum())) for r in revenue]
    gauss = Policy.create("thompson", {"reward": "gaussian"})
    picks = Counter(gauss.choose(_arms(variants, gstats), random.Random(i)) for i in range(500))
    assert picks[1] > 490
    assert gauss.prob_best(gstats)[1] == pytest.approx(1.0, abs=1e-3)
    # A new arm draws from the pooled rewards: it is explored, at the scale the others earn.
    new = [*gstats, VariantStats()]
    draws = [gauss.sample(new, random.Random(i))[2] for i in range(2000)]  # type: ignore[attr-defined]
    assert 8 < float(np.mean(draws)) < 14 and float(np.std(draws)) > 3


def test_winner_needs_min_samples_on_every_arm_and_the_threshold() -> None:
    policy = Policy.create("thompson", {"min_samples": 100, "promote_threshold": 0.95})
    assert policy.experiment.auto_promote
    assert policy.winner([_stats(99, 99, 90), _stats(500, 500, 100)]) is None
    found = policy.winner([_stats(100, 100, 90), _stats(500, 500, 100)])
    assert found is not None and found[0] == 0 and found[1] > 0.99
    assert policy.winner([_stats(200, 200, 100), _stats(200, 200, 101)]) is None  # too close to call
    off = Policy.create("thompson", {"auto_promote": False})
    assert off.winner([_stats(200, 200, 190), _stats(200, 200, 10)]) is None
    assert Policy.create("fixed").winner([_stats(200, 200, 190), _stats(200, 200, 10)]) is None


def test_linucb_learns_which_arm_suits_which_context() -> None:
    policy = Policy.create("linucb", {"features": ["x"], "alpha": 0.5})
    assert isinstance(policy, LinUCBPolicy) and policy.dim == 2
    # Arm 0 pays when x > 0, arm 1 when x < 0: fit each arm's ridge regression on such data.
    rng = np.random.default_rng(1)
    states = []
    for sign in (1.0, -1.0):
        a, b = np.eye(2), np.zeros(2)
        for x in rng.uniform(-1, 1, 400):
            ctx = np.array([1.0, x])
            a += np.outer(ctx, ctx)
            b += (1.0 if sign * x > 0 else 0.0) * ctx
        states.append(LinearState(a, b))
    variants = _variants(1, 1)
    for x, want in ((0.8, 0), (-0.8, 1)):
        ctx = policy.context({"x": x})
        assert policy.choose(_arms(variants, linear=states, context=ctx), random.Random(0)) == want
    with pytest.raises(InvalidArgument) as info:
        policy.context({"y": 1.0})
    assert info.value.field == "features.x"
    assert policy.target_shares(_arms(variants)) == [None, None]


@pytest.mark.parametrize(
    ("type_", "params", "field"),
    [
        ("fixed", {"bogus": 1}, "policy.params.bogus"),
        ("thompson", {"reward": "poisson"}, "policy.params.reward"),
        ("thompson", {"promote_threshold": 0.4}, "policy.params.promote_threshold"),
        ("thompson", {"min_samples": 2.5}, "policy.params.min_samples"),
        ("ucb1", {"c": -1}, "policy.params.c"),
        ("canary", {"percent": 120}, "policy.params.percent"),
        ("fixed", {"shadow_fraction": 1.5}, "policy.params.shadow_fraction"),
        ("fixed", {"auto_candidates": "yes"}, "policy.params.auto_candidates"),
        ("fixed", {"reward_timeout_s": 0}, "policy.params.reward_timeout_s"),
        ("linucb", {"features": ["x"] * 2}, "policy.params.features"),
    ],
)
def test_bad_params_name_their_field(type_: str, params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Policy.create(type_, params)
    assert info.value.field == field


def test_policy_registry() -> None:
    assert Policy.types() == sorted(
        ["fixed", "sticky", "canary", "shadow", "epsilon_greedy", "ucb1", "thompson", "linucb"]
    )
    assert isinstance(Policy.create("fixed", {}), FixedPolicy)
    with pytest.raises(InvalidArgument) as info:
        Policy.create("nope")
    assert info.value.field == "policy.type"
    assert FixedPolicy().target_shares(_arms(_variants(1, 3))) == [0.25, 0.75]
