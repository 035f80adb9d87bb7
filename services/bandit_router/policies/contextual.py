"""``linucb``: a contextual bandit (disjoint LinUCB, Li et al. 2010) over a few declared features.

Each arm keeps a ridge regression of reward on the context ``x = [1, features...]``: ``A = I + sum(x x^T)``
and ``b = sum(r x)``, kept in Redis and updated atomically with each reward (the router remembers each
decision's context until its reward comes). The arm served maximises ``theta^T x + alpha sqrt(x^T A^-1 x)``
with ``theta = A^-1 b``: the predicted reward for this context plus an exploration bonus that shrinks as
the arm sees similar contexts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import numpy as np

from mlops.errors import InvalidArgument
from services.bandit_router.policies.base import Arms, LinearState, Policy
from services.bandit_router.policies.params import ParamReader

MAX_FEATURES = 16


class LinUCBPolicy(Policy):
    """Disjoint LinUCB; ``features`` (required) names the context, ``alpha`` scales exploration."""

    type = "linucb"
    uses_context = True

    def configure(self, r: ParamReader) -> None:
        self.features = r.names("features")
        if not self.features:
            raise InvalidArgument("linucb needs the context's feature names", field=r.field("features"))
        if len(self.features) > MAX_FEATURES:
            raise InvalidArgument(f"linucb takes at most {MAX_FEATURES} features", field=r.field("features"))
        self.alpha = r.required_number("alpha", 1.0, low=0.0)

    @property
    def dim(self) -> int:
        return len(self.features) + 1

    def context(self, values: Mapping[str, Any]) -> np.ndarray:
        """``[1, f1, f2, ...]`` from feature values by name; InvalidArgument names a missing or bad one."""
        x = [1.0]
        for name in self.features:
            value = values.get(name)
            if isinstance(value, bool):
                value = float(value)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidArgument(
                    f"linucb context feature '{name}' is missing or not a finite number", field=f"features.{name}"
                )
            x.append(float(value))
        return np.asarray(x, dtype=np.float64)

    def scores(self, arms: Arms) -> list[float]:
        assert arms.context is not None, "linucb needs the request's context"
        x = arms.context
        linear = arms.linear or [LinearState.empty(len(x)) for _ in arms.variants]
        out = []
        for state in linear:
            a_inv = np.linalg.inv(state.a)
            theta = a_inv @ state.b
            out.append(float(theta @ x + self.alpha * math.sqrt(max(float(x @ a_inv @ x), 0.0))))
        return out

    def choose(self, arms: Arms, rng: random.Random) -> int:
        scores = self.scores(arms)
        top = max(scores)
        best = [i for i, s in enumerate(scores) if s >= top - 1e-12]
        return best[0] if len(best) == 1 else rng.choice(best)

    def target_shares(self, arms: Arms) -> list[float | None]:
        # The choice depends on each request's context: there is no one share to show.
        return [None] * len(arms.variants)
