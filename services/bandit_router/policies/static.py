"""Policies that do not learn from rewards: ``fixed`` (weighted split), ``sticky`` (consistent hashing by
``unit_id``), ``canary`` (a percentage to one variant, watched by guardrails) and ``shadow`` (one live
variant, the others mirrored)."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from typing import Any

from mlops.errors import InvalidArgument
from services.bandit_router.policies.base import Arms, Policy
from services.bandit_router.policies.params import ParamReader
from services.bandit_router.spec import VariantSpec


def unit_point(endpoint: str, unit_id: str, salt: str = "") -> float:
    """A stable point in [0, 1) for ``unit_id`` on ``endpoint`` (independent across endpoints and salts)."""
    digest = hashlib.blake2b(f"{endpoint}\x00{unit_id}\x00{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def pick_by_weight(weights: Sequence[float], point: float) -> int:
    """The index whose slice of the cumulative weights contains ``point`` (in [0, 1)) of the total."""
    total = sum(weights)
    if total <= 0:
        raise InvalidArgument("no variant has a weight > 0", field="variants")
    threshold = point * total
    cumulative = 0.0
    last_positive = 0
    for i, w in enumerate(weights):
        if w <= 0:
            continue
        last_positive = i
        cumulative += w
        if threshold < cumulative:
            return i
    return last_positive  # point * total rounded up to total


class FixedPolicy(Policy):
    """Weighted random split; with a ``unit_id`` the unit's hash point picks, so it keeps its variant
    while the weights stay the same (use ``sticky`` for assignments that survive adding variants)."""

    type = "fixed"

    def choose(self, arms: Arms, rng: random.Random) -> int:
        point = unit_point(arms.endpoint, arms.unit_id) if arms.unit_id else rng.random()
        return pick_by_weight([v.weight for v in arms.variants], point)


class StickyPolicy(Policy):
    """Weighted rendezvous (highest-random-weight) hashing of ``unit_id`` over the variants.

    Each (unit, variant) pair hashes to ``u`` in (0, 1) and scores ``-w / ln(u)``; the unit goes to the
    highest score. That gives each variant its weight's share of units, and adding or removing a variant
    moves only the units that must move (to the new one, or away from the removed one) -- the rest stay.
    Requests without a ``unit_id`` are split at random by weight.
    """

    type = "sticky"

    @staticmethod
    def score(endpoint: str, unit_id: str, variant: VariantSpec) -> float:
        u = unit_point(endpoint, unit_id, variant.name)
        u = min(max(u, 1e-300), 1.0 - 1e-16)  # keep ln(u) finite and negative
        return -variant.weight / math.log(u)

    def choose(self, arms: Arms, rng: random.Random) -> int:
        if not arms.unit_id:
            return pick_by_weight([v.weight for v in arms.variants], rng.random())
        scores = [self.score(arms.endpoint, arms.unit_id, v) if v.weight > 0 else -1.0 for v in arms.variants]
        return max(range(len(scores)), key=scores.__getitem__)


class CanaryPolicy(Policy):
    """``percent`` of traffic to ``canary``, the rest to ``primary``; sticky per ``unit_id`` (a unit's hash
    point below the percentage goes to the canary, so raising the percentage only moves primary users).

    Guardrails, judged by the router's evaluation loop once the canary has ``min_requests`` attempts
    (and ``min_rewards`` rewards for the reward rules): ``max_error_rate``, ``max_p99_ms``, ``min_reward``
    (the canary's 95% interval lies wholly below it) and ``max_reward_drop`` (the canary's interval lies
    wholly below the primary's mean minus the drop). A breach rolls the canary back: it gets no traffic,
    and ``rolled_back`` records when and why.
    """

    type = "canary"

    def configure(self, r: ParamReader) -> None:
        self.primary = r.string("primary", None)
        self.canary = r.string("canary", None)
        self.percent = r.required_number("percent", 10.0, low=0.0, high=100.0)
        self.max_error_rate = r.number("max_error_rate", 0.05, low=0.0, high=1.0)
        self.max_p99_ms = r.number("max_p99_ms", None, low=0.0, low_open=True)
        self.min_reward = r.number("min_reward", None)
        self.max_reward_drop = r.number("max_reward_drop", None, low=0.0)
        self.min_requests = r.integer("min_requests", 50, low=1)
        self.min_rewards = r.integer("min_rewards", 30, low=2)
        self.rolled_back: dict[str, Any] | None = r.mapping("rolled_back")

    def roles(self, variants: Sequence[VariantSpec]) -> tuple[str, str]:
        """``(primary, canary)`` names: as given, else the first two non-shadow variants."""
        shadows = set(self.shadow_indexes(variants))
        others = [v.name for i, v in enumerate(variants) if i not in shadows]
        primary = self.primary or (others[0] if others else "")
        canary = self.canary or next((n for n in others if n != primary), "")
        return primary, canary

    def check_variants(self, variants: Sequence[VariantSpec]) -> None:
        names = [v.name for v in variants]
        primary, canary = self.roles(variants)
        for role, name in (("primary", primary), ("canary", canary)):
            if name not in names:
                raise InvalidArgument(f"canary policy: {role} '{name}' is not a variant", field=f"policy.params.{role}")
        if primary == canary:
            raise InvalidArgument("canary policy: primary and canary must differ", field="policy.params.canary")
        shadows = set(self.shadow_indexes(variants))
        extra = [n for i, n in enumerate(names) if n not in (primary, canary) and i not in shadows]
        if extra:
            raise InvalidArgument(
                f"canary policy: variant '{extra[0]}' is neither primary, canary nor a shadow", field="variants"
            )
        super().check_variants(variants)

    def live(self, variants: Sequence[VariantSpec]) -> list[int]:
        primary, canary = self.roles(variants)
        wanted = {primary} if self.rolled_back or self.percent <= 0 else {primary, canary}
        return [i for i, v in enumerate(variants) if v.name in wanted]

    def choose(self, arms: Arms, rng: random.Random) -> int:
        primary, canary = self.roles(arms.variants)
        names = [v.name for v in arms.variants]
        if canary in names and not self.rolled_back:
            point = unit_point(arms.endpoint, arms.unit_id, "canary") if arms.unit_id else rng.random()
            if point * 100.0 < self.percent or primary not in names:
                return names.index(canary)
        return names.index(primary) if primary in names else 0

    def target_shares(self, arms: Arms) -> list[float | None]:
        primary, canary = self.roles(arms.variants)
        share = 0.0 if self.rolled_back else self.percent / 100.0
        return [share if v.name == canary else (1.0 - share if v.name == primary else 0.0) for v in arms.variants]


class ShadowPolicy(Policy):
    """All live traffic to ``primary`` (default: the first variant); the other variants (or ``shadows``)
    answer a copy of ``shadow_fraction`` of the requests in the background, never seen by the caller."""

    type = "shadow"

    def configure(self, r: ParamReader) -> None:
        self.primary = r.string("primary", None)

    def _primary(self, variants: Sequence[VariantSpec]) -> str:
        if self.primary:
            return self.primary
        explicit = set(self.experiment.shadows)
        return next((v.name for v in variants if v.name not in explicit), variants[0].name if variants else "")

    def shadow_indexes(self, variants: Sequence[VariantSpec]) -> list[int]:
        if self.experiment.shadows:
            return super().shadow_indexes(variants)
        primary = self._primary(variants)
        return [i for i, v in enumerate(variants) if v.name != primary]

    def live(self, variants: Sequence[VariantSpec]) -> list[int]:
        primary = self._primary(variants)
        return [i for i, v in enumerate(variants) if v.name == primary]

    def check_variants(self, variants: Sequence[VariantSpec]) -> None:
        primary = self._primary(variants)
        if primary not in {v.name for v in variants}:
            raise InvalidArgument(f"shadow policy: primary '{primary}' is not a variant", field="policy.params.primary")
        if primary in self.experiment.shadows:
            raise InvalidArgument("shadow policy: the primary cannot be a shadow", field="policy.params.shadows")
        super().check_variants(variants)

    def choose(self, arms: Arms, rng: random.Random) -> int:
        names = [v.name for v in arms.variants]
        primary = self._primary(arms.variants)
        return names.index(primary) if primary in names else 0

    def target_shares(self, arms: Arms) -> list[float | None]:
        primary = self._primary(arms.variants)
        return [1.0 if v.name == primary else 0.0 for v in arms.variants]
