"""Canary guardrails, pure: given the primary's and the canary's statistics, is a limit breached?

Each rule waits for enough evidence so that one unlucky request does not roll a canary back:
error rate and p99 latency need ``min_requests`` attempts on the canary; the reward rules need
``min_rewards`` rewards on it (and on the primary, for the drop) and judge the 95% interval, not the
point estimate, so noise alone rarely trips them.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.bandit_router.policies import CanaryPolicy
from services.bandit_router.stats import VariantStats


@dataclass(frozen=True, slots=True)
class Breach:
    rule: str
    value: float
    limit: float
    reason: str


def check(policy: CanaryPolicy, primary: VariantStats, canary: VariantStats) -> Breach | None:
    """The first guardrail the canary breaches, or None."""
    attempts = canary.decisions + canary.errors
    if attempts >= policy.min_requests:
        rate = canary.error_rate or 0.0
        if policy.max_error_rate is not None and rate > policy.max_error_rate:
            return Breach("error_rate", rate, policy.max_error_rate,
                          f"error rate {rate:.1%} over {attempts} requests > {policy.max_error_rate:.1%}")
        p99 = canary.latency_ms(0.99)
        if policy.max_p99_ms is not None and p99 is not None and canary.decisions >= policy.min_requests \
                and p99 > policy.max_p99_ms:
            return Breach("p99_ms", p99, policy.max_p99_ms, f"p99 latency {p99:g} ms > {policy.max_p99_ms:g} ms")
    if canary.rewards < policy.min_rewards:
        return None
    ci = canary.ci95()
    if ci is None:
        return None
    if policy.min_reward is not None and ci[1] < policy.min_reward:
        return Breach("min_reward", ci[1], policy.min_reward,
                      f"reward 95% interval [{ci[0]:.4g}, {ci[1]:.4g}] is below {policy.min_reward:g}")
    if policy.max_reward_drop is not None and primary.rewards >= policy.min_rewards and primary.mean is not None:
        floor = primary.mean - policy.max_reward_drop
        if ci[1] < floor:
            return Breach("reward_drop", ci[1], floor,
                          f"reward 95% interval [{ci[0]:.4g}, {ci[1]:.4g}] is below the primary's mean "
                          f"{primary.mean:.4g} minus {policy.max_reward_drop:g}")
    return None
