"""Traffic policies: an abstract :class:`Policy` chosen by its ``type`` string, and implementations.

A policy picks one variant per request from the endpoint's variants and (when it says it needs them)
their live statistics. ``fixed`` splits traffic by weight; with a ``unit_id`` the choice is sticky:
the unit hashes to a fixed point in [0, 1), so it keeps its variant while the weights stay the same.
Adaptive policies (Thompson sampling, UCB...) subclass :class:`Policy` with ``uses_stats = True``.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from mlops.errors import InvalidArgument
from services.bandit_router.spec import VariantSpec
from services.bandit_router.stats import VariantStats


def unit_point(endpoint: str, unit_id: str) -> float:
    """A stable point in [0, 1) for ``unit_id`` on ``endpoint`` (independent across endpoints)."""
    digest = hashlib.blake2b(f"{endpoint}\x00{unit_id}".encode(), digest_size=8).digest()
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


class Policy(ABC):
    """Chooses a variant for each request."""

    type: ClassVar[str]
    #: whether :meth:`choose` needs the variants' live statistics (read from Redis per request).
    uses_stats: ClassVar[bool] = False
    _registry: ClassVar[dict[str, type[Policy]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "type", None):
            Policy._registry[cls.type] = cls

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = dict(params or {})
        self.validate_params(self.params)

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        """Raise InvalidArgument (field ``policy.params.<name>``) for unusable params; subclasses extend it."""
        for key in params:
            if not isinstance(key, str) or not key:
                raise InvalidArgument(f"policy parameter names must be strings, got {key!r}", field="policy.params")

    @classmethod
    def types(cls) -> list[str]:
        return sorted(cls._registry)

    @classmethod
    def create(cls, type_: str, params: Mapping[str, Any] | None = None) -> Policy:
        try:
            impl = cls._registry[type_]
        except KeyError:
            raise InvalidArgument(
                f"unknown policy type '{type_}' (known: {', '.join(cls.types())})", field="policy.type"
            ) from None
        return impl(params)

    @abstractmethod
    def choose(
        self,
        endpoint: str,
        variants: Sequence[VariantSpec],
        stats: Sequence[VariantStats] | None,
        unit_id: str | None,
        rng: random.Random,
    ) -> int:
        """The index of the variant to serve this request."""

    def expected_shares(self, variants: Sequence[VariantSpec], stats: Sequence[VariantStats] | None) -> list[float]:
        """The traffic share each variant should get now (for display; the default is by weight)."""
        total = sum(v.weight for v in variants)
        return [v.weight / total if total else 0.0 for v in variants]


class FixedPolicy(Policy):
    """Weighted random split; sticky per ``unit_id`` via hashing."""

    type = "fixed"

    def choose(
        self,
        endpoint: str,
        variants: Sequence[VariantSpec],
        stats: Sequence[VariantStats] | None,
        unit_id: str | None,
        rng: random.Random,
    ) -> int:
        point = unit_point(endpoint, unit_id) if unit_id else rng.random()
        return pick_by_weight([v.weight for v in variants], point)
