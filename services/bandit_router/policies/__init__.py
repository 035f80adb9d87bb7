"""Traffic policies: an abstract :class:`Policy` chosen by its ``type`` string, and implementations.

| type | what it does |
| --- | --- |
| ``fixed`` | weighted random split (sticky per ``unit_id`` while weights stay) |
| ``sticky`` | consistent (rendezvous) hashing of ``unit_id``: a unit stays in its arm |
| ``canary`` | a percentage to one variant, guardrails roll it back on breach |
| ``shadow`` | one live variant; the others answer mirrored copies in the background |
| ``epsilon_greedy`` / ``ucb1`` / ``thompson`` | multi-armed bandits on the rewards |
| ``linucb`` | contextual bandit over declared features |

Importing this package registers every type.
"""

from services.bandit_router.policies.bandits import EpsilonGreedyPolicy, ThompsonPolicy, UCB1Policy
from services.bandit_router.policies.base import Arms, ExperimentParams, LinearState, Policy
from services.bandit_router.policies.contextual import LinUCBPolicy
from services.bandit_router.policies.static import (
    CanaryPolicy,
    FixedPolicy,
    ShadowPolicy,
    StickyPolicy,
    pick_by_weight,
    unit_point,
)

__all__ = [
    "Arms",
    "CanaryPolicy",
    "EpsilonGreedyPolicy",
    "ExperimentParams",
    "FixedPolicy",
    "LinUCBPolicy",
    "LinearState",
    "Policy",
    "ShadowPolicy",
    "StickyPolicy",
    "ThompsonPolicy",
    "UCB1Policy",
    "pick_by_weight",
    "unit_point",
]
