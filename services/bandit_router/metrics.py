"""Prometheus metrics of the bandit router."""

from __future__ import annotations

from prometheus_client import Counter

DECISIONS = Counter(
    "mlops_router_decisions_total", "Predictions served, by endpoint and variant.", ["endpoint", "variant"]
)
FALLBACKS = Counter(
    "mlops_router_fallbacks_total",
    "Times a chosen variant could not serve (alias unset, version not loaded) and another one answered.",
    ["endpoint", "variant"],
)
