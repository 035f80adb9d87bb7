"""Traffic policies: weighted choice, stickiness by unit_id, the type registry."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from mlops.errors import InvalidArgument
from services.bandit_router.policies import FixedPolicy, Policy, pick_by_weight, unit_point
from services.bandit_router.spec import VariantSpec


def _variants(*weights: float) -> tuple[VariantSpec, ...]:
    return tuple(VariantSpec(name=f"v{i}", model="m", version=str(i + 1), weight=w) for i, w in enumerate(weights))


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
    counts = Counter(policy.choose("ep", variants, None, None, rng) for _ in range(20_000))
    assert counts[3] == 0
    for i, w in enumerate((0.7, 0.2, 0.1)):
        assert abs(counts[i] / 20_000 - w) < 0.015


def test_fixed_is_sticky_per_unit_and_still_follows_weights() -> None:
    policy = FixedPolicy()
    variants = _variants(0.25, 0.75)
    rng = random.Random(0)
    first = {f"user-{u}": policy.choose("ep", variants, None, f"user-{u}", rng) for u in range(4000)}
    again = {u: policy.choose("ep", variants, None, u, random.Random(99)) for u in first}
    assert first == again
    share = sum(1 for v in first.values() if v == 1) / len(first)
    assert abs(share - 0.75) < 0.03


def test_unit_point_is_stable_uniform_and_per_endpoint() -> None:
    assert unit_point("ep", "u1") == unit_point("ep", "u1")
    assert unit_point("ep", "u1") != unit_point("other", "u1")
    points = [unit_point("ep", str(i)) for i in range(5000)]
    assert all(0.0 <= p < 1.0 for p in points)
    assert abs(sum(points) / len(points) - 0.5) < 0.02


def test_policy_registry() -> None:
    assert "fixed" in Policy.types()
    assert isinstance(Policy.create("fixed", {}), FixedPolicy)
    with pytest.raises(InvalidArgument) as info:
        Policy.create("nope")
    assert info.value.field == "policy.type"
    assert FixedPolicy().expected_shares(_variants(1, 3), None) == [0.25, 0.75]
