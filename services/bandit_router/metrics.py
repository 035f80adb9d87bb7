"""Prometheus metrics of the bandit router."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prometheus_client import Counter

DECISIONS = Counter(
    "mlops_router_decisions_total", "Predictions served, by endpoint and variant.", ["endpoint", "variant"]
)
FALLBACKS = Counter(
    "mlops_router_fallbacks_total",
    "Times a chosen variant could not serve (alias unset, version not loaded, inference failed) and another "
    "one answered.",
    ["endpoint", "variant"],
)
REWARDS = Counter(
    "mlops_router_rewards_total",
    "Rewards consumed, by outcome: applied, duplicate, late (after the decision expired), stale (variant reset).",
    ["endpoint", "outcome"],
)
SHADOWS = Counter(
    "mlops_router_shadow_requests_total",
    "Mirrored requests, by outcome (ok, error).",
    ["endpoint", "variant", "outcome"],
)
SHADOW_DROPPED = Counter(
    "mlops_router_shadow_dropped_total",
    "Mirrors not started because too many were in flight.",
    ["endpoint", "variant"],
)
ACTIONS = Counter(
    "mlops_router_experiment_actions_total",
    "Experiment actions: arm_added, arm_removed, promoted, rolled_back, and their failures.",
    ["endpoint", "action"],
)


@lru_cache(maxsize=4096)
def decisions(endpoint: str, variant: str) -> Any:
    """``DECISIONS``' child for one variant, looked up once (``labels()`` on every request is not free)."""
    return DECISIONS.labels(endpoint, variant)
