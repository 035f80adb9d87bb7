"""Multi-armed bandits: ``epsilon_greedy``, ``ucb1`` and ``thompson`` (Beta-Bernoulli for 0/1 rewards,
Gaussian for real-valued ones such as revenue).

They decide from the statistics every router replica reads from Redis (decisions, reward count, sum
and sum of squares per variant), so replicas share one posterior. Rewards arrive late (a user converts
minutes after the prediction), so exploration counts *decisions* where the classic algorithms count
pulls with known outcomes: an arm that was just served many times is not served again and again while
its rewards are on their way.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from services.bandit_router.policies.base import Arms, Policy
from services.bandit_router.policies.params import ParamReader
from services.bandit_router.stats import (
    VariantStats,
    beta_posterior,
    probability_best,
    probability_best_beta,
)


def _argmax_random_ties(values: Sequence[float], rng: random.Random) -> int:
    top = max(values)
    best = [i for i, v in enumerate(values) if v == top]
    return best[0] if len(best) == 1 else rng.choice(best)


class EpsilonGreedyPolicy(Policy):
    """With probability ``epsilon`` a uniformly random arm, else the arm with the best mean reward.
    Arms never served go first; arms served but not rewarded yet only get the exploring share."""

    type = "epsilon_greedy"
    uses_stats = True
    can_promote = True

    def configure(self, r: ParamReader) -> None:
        self.epsilon = r.required_number("epsilon", 0.1, low=0.0, high=1.0)

    def choose(self, arms: Arms, rng: random.Random) -> int:
        stats = arms.stats
        unserved = [i for i, s in enumerate(stats) if s.decisions == 0]
        if unserved:
            return rng.choice(unserved)
        rewarded = [i for i, s in enumerate(stats) if s.rewards > 0]
        if not rewarded or rng.random() < self.epsilon:
            return rng.randrange(len(stats))
        means = [stats[i].mean or 0.0 for i in rewarded]
        return rewarded[_argmax_random_ties(means, rng)]

    def target_shares(self, arms: Arms) -> list[float | None]:
        k = len(arms.stats)
        rewarded = [i for i, s in enumerate(arms.stats) if s.rewards > 0]
        if not rewarded or k == 0:
            return [1.0 / k] * k if k else []
        best = max(rewarded, key=lambda i: arms.stats[i].mean or 0.0)
        return [self.epsilon / k + (1.0 - self.epsilon if i == best else 0.0) for i in range(k)]


class UCB1Policy(Policy):
    """Upper confidence bound: ``mean + c * sqrt(2 ln N / n)``, with ``n`` the arm's decisions and ``N``
    all decisions. An arm with no reward yet scores its mean as ``max_reward`` (optimism under
    uncertainty); rewards are assumed to lie in [0, ``max_reward``]."""

    type = "ucb1"
    uses_stats = True
    can_promote = True

    def configure(self, r: ParamReader) -> None:
        self.c = r.required_number("c", 1.0, low=0.0)
        self.max_reward = r.required_number("max_reward", 1.0, low=0.0, low_open=True)

    def scores(self, stats: Sequence[VariantStats]) -> list[float]:
        total = sum(s.decisions for s in stats)
        log_total = math.log(max(total, 1))
        out = []
        for s in stats:
            if s.decisions == 0:
                out.append(math.inf)
                continue
            mean = s.mean if s.mean is not None else self.max_reward
            out.append(mean + self.c * self.max_reward * math.sqrt(2.0 * log_total / s.decisions))
        return out

    def choose(self, arms: Arms, rng: random.Random) -> int:
        return _argmax_random_ties(self.scores(arms.stats), rng)

    def target_shares(self, arms: Arms) -> list[float | None]:
        scores = self.scores(arms.stats)
        if not scores:
            return []
        top = max(scores)
        best = [i for i, s in enumerate(scores) if s == top]
        return [1.0 / len(best) if i in best else 0.0 for i in range(len(scores))]


class ThompsonPolicy(Policy):
    """Thompson sampling: draw each arm's mean from its posterior, serve the arm with the highest draw.

    ``reward: bernoulli`` (default) reads rewards as 0/1 outcomes with a Beta(``prior_alpha``,
    ``prior_beta``) prior. ``reward: gaussian`` takes real-valued rewards: an arm with two rewards or
    more draws ``mean + sd / sqrt(n) * t(n - 1)`` (the posterior of a normal mean under a flat prior);
    an arm with fewer draws from the pooled rewards of all arms (``prior_mean`` / ``prior_sd`` when
    given), so a new arm is explored at the scale of what the others earn.
    """

    type = "thompson"
    uses_stats = True
    can_promote = True

    def configure(self, r: ParamReader) -> None:
        self.reward = r.choice("reward", "bernoulli", ("bernoulli", "gaussian"))
        self.prior_alpha = r.required_number("prior_alpha", 1.0, low=0.0, low_open=True)
        self.prior_beta = r.required_number("prior_beta", 1.0, low=0.0, low_open=True)
        self.prior_mean = r.number("prior_mean", None)
        self.prior_sd = r.number("prior_sd", None, low=0.0, low_open=True)

    def _pooled(self, stats: Sequence[VariantStats]) -> tuple[float, float]:
        n = sum(s.rewards for s in stats)
        total = sum(s.reward_sum for s in stats)
        sumsq = sum(s.reward_sumsq for s in stats)
        mean = total / n if n else 0.0
        var = (sumsq - total * total / n) / (n - 1) if n >= 2 else 1.0
        return (
            self.prior_mean if self.prior_mean is not None else mean,
            self.prior_sd if self.prior_sd is not None else math.sqrt(max(var, 1e-12)),
        )

    def sample(self, stats: Sequence[VariantStats], rng: random.Random) -> list[float]:
        """One posterior draw of every arm's mean reward."""
        if self.reward == "bernoulli":
            return [rng.betavariate(*beta_posterior(s, self.prior_alpha, self.prior_beta)) for s in stats]
        pooled_mean, pooled_sd = self._pooled(stats)
        draws = []
        for s in stats:
            mean, var = s.mean, s.variance
            if mean is None or var is None:
                draws.append(rng.gauss(pooled_mean, pooled_sd))
                continue
            # Student t(n-1) as normal / sqrt(chi2 / df): the normal mean's posterior under a flat prior.
            df = s.rewards - 1
            t = rng.gauss(0.0, 1.0) / math.sqrt(rng.gammavariate(df / 2.0, 2.0) / df)
            draws.append(mean + math.sqrt(var / s.rewards) * t)
        return draws

    def choose(self, arms: Arms, rng: random.Random) -> int:
        if len(arms.stats) == 1:
            return 0
        return _argmax_random_ties(self.sample(arms.stats, rng), rng)

    def prob_best(self, stats: Sequence[VariantStats]) -> list[float | None]:
        if self.reward == "bernoulli":
            return list(probability_best_beta(stats, self.prior_alpha, self.prior_beta))
        return probability_best(stats)

    def means(self, stats: Sequence[VariantStats]) -> list[float | None]:
        if self.reward == "gaussian":
            return [s.mean for s in stats]
        out: list[float | None] = []
        for s in stats:
            a, b = beta_posterior(s, self.prior_alpha, self.prior_beta)
            out.append(a / (a + b) if s.rewards else None)
        return out

    def target_shares(self, arms: Arms) -> list[float | None]:
        # Thompson serves each arm with exactly its posterior probability of being the best one.
        if self.reward == "bernoulli":
            return list(probability_best_beta(arms.stats, self.prior_alpha, self.prior_beta))
        rng = random.Random(0)
        k = len(arms.stats)
        if k == 0:
            return []
        wins = [0] * k
        for _ in range(2000):
            draws = self.sample(arms.stats, rng)
            wins[max(range(k), key=draws.__getitem__)] += 1
        return [w / 2000 for w in wins]
