"""The abstract traffic policy, its ``type`` registry, and the parameters every policy shares.

A policy picks one variant per request from an endpoint's live variants (:class:`Arms`), and says what
it wants the traffic to be (target shares), how likely each variant is to be the best one, and, for the
adaptive ones, whether an experiment is finished (:meth:`Policy.winner`). Implementations register
themselves by their ``type`` string (as feast's online stores do), so a spec's ``policy.type`` picks one.

Parameters every policy accepts (``policy.params``):
``shadows`` / ``shadow_fraction`` (variants mirrored in the background, and the fraction of requests
mirrored), ``reward_timeout_s`` / ``missing_reward`` (when a reward is given up on, and what it then counts
as; none by default: the decision is only counted as expired), ``auto_candidates`` (add new registry
candidates of the endpoint's models as arms), and for adaptive policies ``auto_promote``,
``promote_threshold``, ``min_samples``, ``reset_on_new_arm``, ``retire_losers``.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mlops.errors import InvalidArgument
from services.bandit_router.policies.params import ParamReader
from services.bandit_router.spec import VariantSpec
from services.bandit_router.stats import VariantStats, probability_best, probability_best_beta


@dataclass(frozen=True, slots=True)
class LinearState:
    """One arm's ridge-regression statistics over the context: ``a = I + sum(x x^T)``, ``b = sum(r x)``."""

    a: np.ndarray
    b: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> LinearState:
        return cls(np.eye(dim), np.zeros(dim))


@dataclass(frozen=True, slots=True)
class Arms:
    """What a policy sees of one request: the candidate variants (in order) and their state."""

    endpoint: str
    variants: Sequence[VariantSpec]
    stats: Sequence[VariantStats]
    unit_id: str | None = None
    context: np.ndarray | None = None
    linear: Sequence[LinearState] | None = None


@dataclass(frozen=True, slots=True)
class ExperimentParams:
    """The parameters every policy shares (see the module docstring)."""

    shadows: tuple[str, ...] = ()
    shadow_fraction: float = 1.0
    reward_timeout_s: float | None = None
    missing_reward: float | None = None
    auto_candidates: bool = False
    auto_promote: bool = False
    promote_threshold: float = 0.95
    min_samples: int = 100
    reset_on_new_arm: bool = True
    retire_losers: bool = True


class Policy(ABC):
    """Chooses a variant for each request."""

    type: ClassVar[str]
    #: ``choose`` needs the variants' live statistics (read from Redis per request).
    uses_stats: ClassVar[bool] = False
    #: ``choose`` needs the request's context vector and each arm's :class:`LinearState`.
    uses_context: ClassVar[bool] = False
    #: the policy learns which variant is best and can finish the experiment by promoting it.
    can_promote: ClassVar[bool] = False
    _registry: ClassVar[dict[str, type[Policy]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "type", None):
            Policy._registry[cls.type] = cls

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = dict(params or {})
        reader = ParamReader(self.params)
        self.experiment = self._read_experiment(reader)
        self.configure(reader)
        reader.finish(self.type)

    # -- construction ------------------------------------------------------------------------------
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

    def _read_experiment(self, r: ParamReader) -> ExperimentParams:
        auto_promote = r.boolean("auto_promote", self.can_promote)
        if auto_promote and not self.can_promote:
            raise InvalidArgument(f"policy '{self.type}' cannot promote a winner", field=r.field("auto_promote"))
        timeout = r.number("reward_timeout_s", None, low=0.0, low_open=True)
        return ExperimentParams(
            shadows=r.names("shadows"),
            shadow_fraction=r.required_number("shadow_fraction", 1.0, low=0.0, high=1.0),
            reward_timeout_s=timeout,
            missing_reward=r.number("missing_reward", None),
            auto_candidates=r.boolean("auto_candidates", False),
            auto_promote=auto_promote,
            promote_threshold=r.required_number("promote_threshold", 0.95, low=0.5, high=1.0, low_open=True),
            min_samples=r.integer("min_samples", 100, low=1),
            reset_on_new_arm=r.boolean("reset_on_new_arm", True),
            retire_losers=r.boolean("retire_losers", True),
        )

    def configure(self, reader: ParamReader) -> None:  # noqa: B027 - optional hook
        """Read this policy's own parameters (subclasses)."""

    # -- which variants take live traffic ----------------------------------------------------------
    def shadow_indexes(self, variants: Sequence[VariantSpec]) -> list[int]:
        """Variants that only receive mirrored requests."""
        names = set(self.experiment.shadows)
        return [i for i, v in enumerate(variants) if v.name in names]

    def live(self, variants: Sequence[VariantSpec]) -> list[int]:
        """Indexes of the variants that may answer requests (not shadows, weight > 0)."""
        shadows = set(self.shadow_indexes(variants))
        return [i for i, v in enumerate(variants) if i not in shadows and v.weight > 0]

    def check_variants(self, variants: Sequence[VariantSpec]) -> None:
        """Raise InvalidArgument when the params name variants the spec lacks, or nothing is live."""
        names = {v.name for v in variants}
        for name in self.experiment.shadows:
            if name not in names:
                raise InvalidArgument(f"shadow '{name}' is not a variant", field="policy.params.shadows")
        if not self.live(variants):
            raise InvalidArgument("no variant takes live traffic (all shadows or weight 0)", field="variants")

    # -- choice and what the live state shows --------------------------------------------------------
    def pick(self, arms: Arms, rng: random.Random) -> int:
        """The index (into ``arms.variants``) to serve: :meth:`choose`, after the minimum sample.

        A policy that will promote a winner needs ``min_samples`` rewards from every arm first; a bandit
        left alone starves a losing arm (its sample grows like log(requests)), so the promotion would never
        come. Arms whose decisions that can still be rewarded (decisions - expired) are below
        ``min_samples`` are therefore served first (the policy chooses among them).
        """
        short = self.short_of_minimum(arms.stats)
        if not short or len(short) == len(arms.variants):
            return self.choose(arms, rng)
        sub = Arms(
            arms.endpoint,
            [arms.variants[i] for i in short],
            [arms.stats[i] for i in short],
            arms.unit_id,
            arms.context,
            [arms.linear[i] for i in short] if arms.linear is not None else None,
        )
        return short[self.choose(sub, rng)]

    def short_of_minimum(self, stats: Sequence[VariantStats]) -> list[int]:
        """Arms still below the minimum sample an automatic promotion needs (none if it never promotes)."""
        e = self.experiment
        if not (self.can_promote and e.auto_promote) or len(stats) < 2:
            return []
        return [i for i, s in enumerate(stats) if s.decisions - s.expired < e.min_samples]

    @abstractmethod
    def choose(self, arms: Arms, rng: random.Random) -> int:
        """The index (into ``arms.variants``) of the variant to serve this request."""

    def target_shares(self, arms: Arms) -> list[float | None]:
        """The share of traffic each variant gets under the policy now (default: by weight)."""
        total = sum(v.weight for v in arms.variants)
        return [v.weight / total if total else 0.0 for v in arms.variants]

    def prob_best(self, stats: Sequence[VariantStats]) -> list[float | None]:
        """P(highest mean reward), among variants with two rewards or more (Beta when rewards are 0/1)."""
        eligible = [i for i, s in enumerate(stats) if s.rewards >= 2]
        if eligible and all(stats[i].binary for i in eligible):
            out: list[float | None] = [None] * len(stats)
            for i, p in zip(eligible, probability_best_beta([stats[i] for i in eligible]), strict=True):
                out[i] = p
            return out
        return probability_best(stats)

    def means(self, stats: Sequence[VariantStats]) -> list[float | None]:
        """The estimate of each variant's mean reward (sample mean; None without rewards)."""
        return [s.mean for s in stats]

    def winner(self, stats: Sequence[VariantStats]) -> tuple[int, float] | None:
        """``(index, P(best))`` of a variant the experiment can be finished with, or None.

        Only for policies that promote, with at least two arms, every arm at ``min_samples`` rewards or
        more, and one arm's probability of being best at ``promote_threshold`` or more.
        """
        e = self.experiment
        if not (self.can_promote and e.auto_promote) or len(stats) < 2:
            return None
        if any(s.rewards < e.min_samples for s in stats):
            return None
        best = self.prob_best(stats)
        known = [(p, i) for i, p in enumerate(best) if p is not None]
        if not known:
            return None
        p, i = max(known)
        return (i, p) if p >= e.promote_threshold else None
