"""An endpoint's live state, computed from its spec, its policy and the shared statistics: per variant
the traffic it got and the share the policy gives it now, reward mean and 95% interval, probability of
being best, estimated regret, errors and latency; for the endpoint its totals and event log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.bandit_router.policies import Arms, Policy
from services.bandit_router.spec import EndpointSpec, VariantSpec
from services.bandit_router.stats import VariantStats, estimated_regret, traffic_shares
from services.bandit_router.store import EndpointCounters

LIVE, SHADOW, PAUSED = "live", "shadow", "paused"


@dataclass(frozen=True, slots=True)
class VariantState:
    spec: VariantSpec
    stats: VariantStats
    traffic_share: float
    probability_best: float | None
    target_share: float | None = None
    regret: float | None = None
    role: str = LIVE


@dataclass(frozen=True, slots=True)
class EndpointState:
    spec: EndpointSpec
    variants: list[VariantState]
    counters: EndpointCounters = field(default_factory=EndpointCounters)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def regret(self) -> float | None:
        known = [v.regret for v in self.variants if v.regret is not None]
        return sum(known) if known else None

    @property
    def status(self) -> str:
        """``promoted`` once the experiment finished, ``rolled_back`` after a canary breach, else running."""
        for event in reversed(self.events):
            if event["kind"] in ("promoted", "rolled_back"):
                return str(event["kind"])
            if event["kind"] in ("created", "updated", "arm_added"):
                break
        return "running"


def _roles(spec: EndpointSpec, policy: Policy) -> list[str]:
    live = set(policy.live(spec.variants))
    shadows = set(policy.shadow_indexes(spec.variants))
    return [LIVE if i in live else SHADOW if i in shadows else PAUSED for i in range(len(spec.variants))]


def build_state(
    spec: EndpointSpec,
    policy: Policy,
    stats: Sequence[VariantStats],
    counters: EndpointCounters | None = None,
    events: list[dict[str, Any]] | None = None,
) -> EndpointState:
    roles = _roles(spec, policy)
    live = [i for i, r in enumerate(roles) if r == LIVE]
    # Regret counts every variant that took live traffic (a rolled-back canary too), never shadows.
    served = [i for i, r in enumerate(roles) if r != SHADOW]
    live_stats = [stats[i] for i in live]
    prob_best: list[float | None] = [None] * len(stats)
    target: list[float | None] = [0.0] * len(stats)
    if live:
        for i, p in zip(live, policy.prob_best(live_stats), strict=True):
            prob_best[i] = p
        arms = Arms(spec.endpoint, [spec.variants[i] for i in live], live_stats)
        for i, t in zip(live, policy.target_shares(arms), strict=True):
            target[i] = t
    regret: list[float | None] = [None] * len(stats)
    served_stats = [stats[i] for i in served]
    for i, r in zip(served, estimated_regret(served_stats, policy.means(served_stats)), strict=True):
        regret[i] = r
    shares = traffic_shares(stats)
    columns = zip(spec.variants, stats, shares, prob_best, target, regret, roles, strict=True)
    variants = [VariantState(v, s, share, p, t, r, role) for v, s, share, p, t, r, role in columns]
    return EndpointState(spec, variants, counters or EndpointCounters(), events or [])
