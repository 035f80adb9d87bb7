"""Simulated traffic for the router's policies: arms with known reward rates, rewards that come late or
never, and the resulting traffic and regret. The policies are the service's own objects, fed the same
:class:`VariantStats` / :class:`LinearState` arithmetic the Redis scripts keep, so the unit tests and
``./scripts/bench bandit`` measure exactly what the router runs.

``python -m services.bandit_router.simulate --requests 5000 --seeds 5`` prints the regret curves of every
policy on one scenario as JSON (the bench calls it this way: libs/ never imports services/).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from services.bandit_router.policies import Arms, LinearState, Policy
from services.bandit_router.spec import VariantSpec
from services.bandit_router.stats import VariantStats


class ArmModel(Protocol):
    def mean(self, x: np.ndarray | None) -> float: ...
    def draw(self, rng: random.Random, x: np.ndarray | None) -> float: ...


@dataclass(frozen=True, slots=True)
class BernoulliArm:
    """Reward 1 with probability ``p`` (a conversion), else 0."""

    p: float

    def mean(self, x: np.ndarray | None) -> float:
        return self.p

    def draw(self, rng: random.Random, x: np.ndarray | None) -> float:
        return 1.0 if rng.random() < self.p else 0.0


@dataclass(frozen=True, slots=True)
class GaussianArm:
    """A real-valued reward (revenue): normal with mean ``mu`` and standard deviation ``sd``."""

    mu: float
    sd: float

    def mean(self, x: np.ndarray | None) -> float:
        return self.mu

    def draw(self, rng: random.Random, x: np.ndarray | None) -> float:
        return rng.gauss(self.mu, self.sd)


@dataclass(frozen=True, slots=True)
class LogisticArm:
    """A 0/1 reward whose rate depends on the context: ``sigmoid(w . [1, x])``."""

    w: tuple[float, ...]

    def mean(self, x: np.ndarray | None) -> float:
        z = self.w[0] + float(np.dot(self.w[1:], x)) if x is not None else self.w[0]
        return 1.0 / (1.0 + math.exp(-z))

    def draw(self, rng: random.Random, x: np.ndarray | None) -> float:
        return 1.0 if rng.random() < self.mean(x) else 0.0


@dataclass(slots=True)
class _Counts:
    decisions: int = 0
    rewards: int = 0
    total: float = 0.0
    sumsq: float = 0.0
    settled: int = 0

    def stats(self) -> VariantStats:
        return VariantStats(self.decisions, self.rewards, self.total, self.sumsq, settled=self.settled)


@dataclass
class Trace:
    """One simulated run: the arm chosen for each request and the cumulative (pseudo-)regret."""

    policy: str
    choices: list[int] = field(default_factory=list)
    regret: list[float] = field(default_factory=list)
    best: list[int] = field(default_factory=list)
    final_stats: list[VariantStats] = field(default_factory=list)
    #: ``(request count, arm)`` when the policy would first have promoted a winner (checked every 50).
    promoted: tuple[int, int] | None = None

    def share_on_best(self, start: int, end: int) -> float:
        window = range(start, min(end, len(self.choices)))
        return sum(self.choices[i] == self.best[i] for i in window) / max(1, len(window))

    def requests_to_share(self, share: float, window: int) -> int | None:
        """The first request count after which the last ``window`` requests stay >= ``share`` on the best
        arm for the rest of the run (None if never)."""
        hits = np.array([c == b for c, b in zip(self.choices, self.best, strict=True)], dtype=np.float64)
        if len(hits) < window:
            return None
        rolling = np.convolve(hits, np.ones(window) / window, mode="valid")  # rolling[i]: requests i..i+window-1
        below = np.nonzero(rolling < share)[0]
        if len(below) == 0:
            return window
        last_bad = int(below[-1])
        return last_bad + 1 + window if last_bad + 1 < len(rolling) else None


def simulate(
    policy: Policy,
    arms: Sequence[ArmModel],
    requests: int,
    seed: int = 0,
    delay: int = 0,
    missing: float = 0.0,
    context_dim: int = 0,
    finish: bool = False,
) -> Trace:
    """Serve ``requests`` through ``policy``; each reward arrives ``delay`` requests later, or never with
    probability ``missing``. Contexts (``context_dim`` uniform features in [-1, 1]) feed LinUCB and any
    context-dependent arm. With ``finish``, once the policy would promote a winner every later request
    goes to it, as the router's endpoint then has that one arm left."""
    rng = random.Random(seed)
    endpoint = "sim"
    variants = [VariantSpec(name=f"arm{i}", model="sim", version=str(i + 1)) for i in range(len(arms))]
    counts = [_Counts() for _ in arms]
    features = list(getattr(policy, "features", ())) or [f"x{i}" for i in range(context_dim)]
    dim = len(features) + 1
    linear = [[np.eye(dim), np.zeros(dim)] for _ in arms]
    inflight: deque[tuple[int, int, float | None, np.ndarray | None]] = deque()
    trace = Trace(policy=policy.type)
    cumulative = 0.0
    for t in range(requests):
        x = np.array([rng.uniform(-1.0, 1.0) for _ in range(context_dim)]) if context_dim else None
        context = None
        if policy.uses_context:
            values = dict(zip(features, x if x is not None else np.zeros(len(features)), strict=False))
            context = policy.context(values)  # type: ignore[attr-defined]
        view = Arms(
            endpoint,
            variants,
            [c.stats() for c in counts],
            None,
            context,
            [LinearState(a.copy(), b.copy()) for a, b in linear] if context is not None else None,
        )
        choice = trace.promoted[1] if finish and trace.promoted is not None else policy.pick(view, rng)
        counts[choice].decisions += 1
        means = [arm.mean(x) for arm in arms]
        best = max(range(len(arms)), key=means.__getitem__)
        cumulative += means[best] - means[choice]
        trace.choices.append(choice)
        trace.best.append(best)
        trace.regret.append(cumulative)
        reward = None if rng.random() < missing else arms[choice].draw(rng, x)
        inflight.append((t + delay, choice, reward, context))
        if trace.promoted is None and t % 50 == 49:
            found = policy.winner([c.stats() for c in counts])
            if found is not None:
                trace.promoted = (t + 1, found[0])
        while inflight and inflight[0][0] <= t:
            _, arm, r, ctx = inflight.popleft()
            c = counts[arm]
            if r is None:
                continue  # never comes: the router would settle it as expired after the timeout
            c.settled += 1
            c.rewards += 1
            c.total += r
            c.sumsq += r * r
            if ctx is not None:
                linear[arm][0] += np.outer(ctx, ctx)
                linear[arm][1] += r * ctx
    trace.final_stats = [c.stats() for c in counts]
    return trace


# -- the scenario the bench and the tests share ---------------------------------------------------------
#: Three conversion rates: the best arm is 0.07 ahead of the next (a realistic A/B/C gap).
CONVERSION_ARMS: tuple[BernoulliArm, ...] = (BernoulliArm(0.05), BernoulliArm(0.10), BernoulliArm(0.17))
#: Two arms whose better one depends on the first context feature (LinUCB's scenario).
CONTEXT_ARMS: tuple[LogisticArm, ...] = (LogisticArm((0.0, 2.0, 0.0)), LogisticArm((0.0, -2.0, 0.0)))

#: The policies compared: the bandits as algorithms (no promotion, so no minimum sample), and Thompson
#: as an endpoint runs it by default (every arm's 100-reward minimum first, then promotion of the winner,
#: which takes every later request).
POLICIES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "uniform": ("fixed", {}, False),
    "epsilon_greedy": ("epsilon_greedy", {"epsilon": 0.1, "auto_promote": False}, False),
    "ucb1": ("ucb1", {"auto_promote": False}, False),
    "thompson": ("thompson", {"auto_promote": False}, False),
    "thompson_promote": ("thompson", {"min_samples": 100, "promote_threshold": 0.95}, True),
    "linucb": ("linucb", {"features": ["x0", "x1"], "alpha": 1.0}, False),
}


def curves(
    scenario: str, requests: int, seeds: int, delay: int, points: int = 50
) -> dict[str, Any]:
    """Mean cumulative regret per policy at ``points`` request counts, plus summary figures."""
    arms: Sequence[ArmModel] = CONVERSION_ARMS if scenario == "conversion" else CONTEXT_ARMS
    xs = sorted({max(1, round(requests * (i + 1) / points)) for i in range(points)})
    out: dict[str, Any] = {"scenario": scenario, "requests": requests, "seeds": seeds, "delay": delay, "x": xs,
                           "arms": [getattr(a, "p", None) or list(getattr(a, "w", ())) for a in arms], "policies": {}}
    for label, (type_, params, finish) in POLICIES.items():
        regrets, shares, to90, promoted = [], [], [], []
        for seed in range(seeds):
            trace = simulate(Policy.create(type_, params), arms, requests, seed=seed, delay=delay, context_dim=2,
                             finish=finish)
            regrets.append([trace.regret[x - 1] for x in xs])
            shares.append(trace.share_on_best(requests - requests // 10, requests))
            to90.append(trace.requests_to_share(0.9, 500))
            promoted.append(trace.promoted)
        reached = [r for r in to90 if r is not None]
        right = [p[0] for p in promoted if p is not None and p[1] == trace.best[-1]]
        out["policies"][label] = {
            "regret": np.mean(regrets, axis=0).tolist(),
            "final_regret": float(np.mean([r[-1] for r in regrets])),
            "best_share_last_10pct": float(np.mean(shares)),
            "requests_to_90pct_best": float(np.median(reached)) if len(reached) == seeds else None,
            "requests_to_promotion": float(np.median(right)) if len(right) == seeds else None,
            "wrong_promotions": sum(1 for p in promoted if p is not None and p[1] != trace.best[-1]),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.bandit_router.simulate", description=__doc__)
    parser.add_argument("--scenario", choices=("conversion", "context"), default="conversion")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--delay", type=int, default=50, help="requests between a decision and its reward")
    args = parser.parse_args(argv)
    json.dump(curves(args.scenario, args.requests, args.seeds, args.delay), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
