"""Simulations with known reward rates (services/bandit_router/simulate.py drives the service's own
policies): Thompson sampling concentrates on the best of three arms within a stated number of requests,
its regret stays far below a uniform split's, with rewards delayed and some never arriving; the Gaussian
variant does the same on revenue; LinUCB wins where the best arm depends on the context."""

from __future__ import annotations

import pytest

from services.bandit_router.policies import Policy
from services.bandit_router.simulate import (
    CONTEXT_ARMS,
    CONVERSION_ARMS,
    BernoulliArm,
    GaussianArm,
    simulate,
)

#: The stated bound: within 2,000 requests, Thompson sends >= 90% of traffic to the best of three arms
#: (conversion rates 5%, 10%, 17%), and keeps doing so, with rewards arriving 50 requests late.
REQUESTS_TO_90PCT = 2000
SEEDS = range(5)


@pytest.mark.parametrize("seed", SEEDS)
def test_thompson_puts_90_percent_on_the_best_of_three_within_the_stated_requests(seed: int) -> None:
    trace = simulate(Policy.create("thompson"), CONVERSION_ARMS, 4000, seed=seed, delay=50)
    reached = trace.requests_to_share(0.9, window=500)
    assert reached is not None and reached <= REQUESTS_TO_90PCT, reached
    assert trace.share_on_best(REQUESTS_TO_90PCT, 4000) >= 0.9


@pytest.mark.parametrize("seed", SEEDS)
def test_thompson_promotes_the_best_arm_after_its_minimum_sample(seed: int) -> None:
    policy = Policy.create("thompson", {"min_samples": 100, "promote_threshold": 0.95})
    trace = simulate(policy, CONVERSION_ARMS, 6000, seed=seed, delay=50)
    assert trace.promoted is not None and trace.promoted[1] == 2, trace.promoted
    assert 300 <= trace.promoted[0] <= 6000  # never before every arm has its 100 rewards
    assert min(s.rewards for s in trace.final_stats) >= 100


def test_thompson_regret_is_far_below_a_uniform_split() -> None:
    thompson = [simulate(Policy.create("thompson"), CONVERSION_ARMS, 5000, seed=s, delay=50).regret[-1] for s in SEEDS]
    uniform = [simulate(Policy.create("fixed"), CONVERSION_ARMS, 5000, seed=s, delay=50).regret[-1] for s in SEEDS]
    # A uniform split loses (0.17 - 0.05 + 0.17 - 0.10) / 3 per request: about 317 over 5,000.
    assert sum(uniform) / len(uniform) == pytest.approx(5000 * 0.19 / 3, rel=0.02)
    assert sum(thompson) / len(thompson) < 0.15 * sum(uniform) / len(uniform)


def test_every_bandit_beats_uniform_on_the_same_arms() -> None:
    uniform = simulate(Policy.create("fixed"), CONVERSION_ARMS, 5000, seed=3, delay=50).regret[-1]
    for type_ in ("epsilon_greedy", "ucb1", "thompson"):
        regret = simulate(Policy.create(type_), CONVERSION_ARMS, 5000, seed=3, delay=50).regret[-1]
        assert regret < 0.5 * uniform, type_


def test_missing_rewards_slow_learning_but_do_not_mislead_it() -> None:
    # 30% of rewards never come: the posterior only sees the ones that did, which are unbiased.
    trace = simulate(Policy.create("thompson"), CONVERSION_ARMS, 6000, seed=1, delay=200, missing=0.3)
    assert trace.share_on_best(4000, 6000) >= 0.9
    assert sum(s.rewards for s in trace.final_stats) < 0.75 * 6000


def test_gaussian_thompson_finds_the_highest_revenue() -> None:
    arms = (GaussianArm(10.0, 8.0), GaussianArm(12.0, 8.0), GaussianArm(9.0, 8.0))
    trace = simulate(Policy.create("thompson", {"reward": "gaussian"}), arms, 4000, seed=2, delay=20)
    assert trace.share_on_best(3000, 4000) >= 0.9
    uniform = simulate(Policy.create("fixed"), arms, 4000, seed=2, delay=20)
    assert trace.regret[-1] < 0.2 * uniform.regret[-1]


def test_linucb_beats_context_blind_policies_when_the_best_arm_depends_on_the_context() -> None:
    linucb = simulate(Policy.create("linucb", {"features": ["x0", "x1"]}), CONTEXT_ARMS, 3000, seed=0, delay=20,
                      context_dim=2)
    thompson = simulate(Policy.create("thompson"), CONTEXT_ARMS, 3000, seed=0, delay=20, context_dim=2)
    assert linucb.share_on_best(2000, 3000) >= 0.85
    assert linucb.regret[-1] < 0.2 * thompson.regret[-1]


def test_equal_arms_split_and_no_winner_is_declared() -> None:
    arms = (BernoulliArm(0.1), BernoulliArm(0.1))
    policy = Policy.create("thompson", {"min_samples": 200})
    trace = simulate(policy, arms, 4000, seed=4, delay=10)
    assert trace.regret[-1] == 0.0
    assert policy.winner(trace.final_stats) is None
