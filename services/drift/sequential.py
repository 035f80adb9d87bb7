"""A streaming detector with the alert discipline around it: an effect-size gate that keeps the detector's
speed, hysteresis and a level baseline, so that one shift gives one alert and tiny-but-significant moves
give none.

A river detector fires whenever its test rejects "no change"; on a long stable stream that includes
moves too small to matter, and after a real shift it keeps firing while the stream settles (PageHinkley
on log loss fired 101 times for one shift here). :class:`Sequential` turns those firings into alerts:

- *stable*: values feed a baseline (running mean since the stream last settled). A firing becomes an
  alert **at that value** when the values since the change moved from the baseline by at least
  ``min_effect`` and ``min_z`` standard errors in the watched ``direction``. The change point is not
  known, so every run of the last ``min_values`` .. ``effect_window`` values is tried (a detector fires
  a few dozen values after an abrupt change: the last 100 values were then mostly pre-change, and their
  mean delayed alerts 2.5x behind the detector and lost some).
- a firing without that effect opens a *post-firing window*: for the next ``confirm_window`` values,
  kept out of the baseline, the test is repeated at every value over the runs ending now and starting
  up to ``effect_window`` values before the firing, so a real change gains evidence value by value and
  is alerted when it shows, even if the detector (which has adapted) never fires again. Only when the
  window passes without the effect do its values join the baseline (the firing is counted as
  suppressed): a move under ``min_effect`` is by rule not worth an alert.
- *drifting*: after an alert no further alert is raised; every firing restarts a quiet count, and after
  ``settle`` values without one the stream is stable again with the mean of the recent values as its new
  baseline (hysteresis: entering needs a firing plus an effect, leaving needs a long calm), and the
  detector is re-armed on that level (a fresh one, fed the settled values).

Standard errors use the baseline's variance for both sides: under "no change" the recent values have the
baseline's spread, and a run of ten 0/1 values has no usable variance of its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.drift import detectors

Direction = Literal["up", "down", "both"]


class SequentialConfig(BaseModel):
    """How a detector's firings become alerts on one stream (prediction scores or per-example loss)."""

    model_config = ConfigDict(extra="forbid")
    min_effect: float = Field(0.05, ge=0, description="Smallest move of the stream's mean that is worth an alert.")
    min_z: float = Field(
        3.0, ge=0, description="The move must also be this many standard errors (recent vs baseline mean)."
    )
    direction: Direction = Field("both", description="Which moves count: up (e.g. a loss rising), down, or both.")
    effect_window: int = Field(
        100, gt=1, description="Longest run of values before a firing (or its window) the move is tested on."
    )
    min_values: int = Field(10, gt=1, description="Fewest recent values the move is measured on.")
    confirm_window: int = Field(
        500, ge=0, description="Values after a firing without the effect during which it is tested again at each value."
    )
    settle: int = Field(
        1000, gt=0, description="Values without a firing before a drifting stream is stable again (and re-armed)."
    )
    min_baseline: int = Field(100, gt=0, description="Values the baseline needs before any alert.")

    @model_validator(mode="after")
    def _runs_fit(self) -> SequentialConfig:
        if self.min_values > self.effect_window:
            raise ValueError("min_values must not exceed effect_window")
        return self


class _Moments:
    """Count, mean and variance of a stream segment, updated one value at a time."""

    __slots__ = ("n", "squares", "total")

    def __init__(self) -> None:
        self.n, self.total, self.squares = 0, 0.0, 0.0

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        self.squares += x * x

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def var(self) -> float:
        if self.n < 2:
            return 0.0
        return max(0.0, (self.squares - self.total * self.total / self.n) / (self.n - 1))


@dataclass(frozen=True, slots=True)
class Firing:
    """An alert-worthy firing: the levels compared, the move in standard errors, the sample sizes."""

    baseline: float
    current: float
    effect: float
    z: float
    baseline_n: int
    recent_n: int


class Sequential:
    """One detector on one stream with the discipline above; :meth:`update` returns a Firing or None."""

    def __init__(self, detector: detectors.DriftDetector, config: SequentialConfig,
                 rearm: Callable[[], detectors.DriftDetector] | None = None) -> None:
        self.detector = detector
        self.config = config
        self._rearm = rearm
        self.drifting = False
        self.fired = 0  # every firing of the detector
        self.suppressed = 0  # firings whose post-firing window passed without the effect
        self.alerts = 0
        self._recent: deque[float] = deque(maxlen=config.effect_window)
        # what a post-firing window's test may look back over: the values before the firing and since it
        self._tail: deque[float] = deque(maxlen=max(config.effect_window + config.confirm_window + 1, config.settle))
        self._base = _Moments()
        self._after = _Moments()  # values since the last firing while drifting: the next baseline
        self._window: list[float] | None = None  # the open post-firing window's values, kept from the baseline

    @property
    def baseline(self) -> float | None:
        return self._base.mean if self._base.n else None

    @property
    def current(self) -> float | None:
        return sum(self._recent) / len(self._recent) if self._recent else None

    @property
    def confirming(self) -> bool:
        """A firing's post-firing window is open."""
        return self._window is not None

    def _effect(self, longest: int) -> Firing | None:
        """The strongest run ending now, of ``min_values`` .. ``longest`` values, whose mean moved from the
        baseline by ``min_effect`` and ``min_z`` in the watched direction; None when no run did."""
        cfg = self.config
        n = min(longest, len(self._tail))
        if n < cfg.min_values:
            return None
        newest_first = np.fromiter(reversed(self._tail), dtype=np.float64, count=len(self._tail))[:n]
        sizes = np.arange(1, n + 1)
        means = np.cumsum(newest_first) / sizes
        delta = means - self._base.mean
        se = np.sqrt(self._base.var / sizes + self._base.var / self._base.n)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(se > 0, delta / se, np.sign(delta) * np.inf)
        sign = {"up": 1.0, "down": -1.0, "both": np.sign(delta)}[cfg.direction]
        ok = (sign * delta >= cfg.min_effect) & (sign * z >= cfg.min_z) & (sizes >= cfg.min_values)
        if not ok.any():
            return None
        best = int(np.argmax(np.where(ok, np.abs(z), -np.inf)))
        return Firing(self._base.mean, float(means[best]), float(delta[best]), float(z[best]), self._base.n, best + 1)

    def update(self, x: float) -> Firing | None:
        fired = self.detector.update(x)
        self._recent.append(x)
        self._tail.append(x)
        self.fired += fired
        if self.drifting:
            if fired:
                self._after = _Moments()
            self._after.add(x)
            if self._after.n >= self.config.settle:
                # Settled at a new level: that level is the baseline from now on, and the detector measures
                # from it (river's PageHinkley measures from the mean since its start, which follows a shift
                # slowly: it fired again every ~1,000 values at the new level, each firing a new episode).
                self.drifting, self._base, self._after = False, self._after, _Moments()
                if self._rearm is not None:
                    self.detector = self._rearm()
                    self.detector.replay(list(self._tail)[-self.config.settle:])
            return None
        if fired and self._window is None and self._base.n >= self.config.min_baseline:
            self._window = []
        if self._window is None:
            self._base.add(x)
            return None
        self._window.append(x)
        firing = self._effect(self.config.effect_window + len(self._window) - 1)
        if firing is not None:
            self.drifting, self._window, self._after = True, None, _Moments()
            self.alerts += 1
            return firing
        if len(self._window) > self.config.confirm_window:
            # The window passed without the effect: the move, if any, is under the rule's minimum.
            for value in self._window:
                self._base.add(value)
            self._window = None
            self.suppressed += 1
        return None

    def replay(self, values: Iterable[float]) -> int:
        """Feed past values without reporting (rebuilding after a restart); returns the alerts they held."""
        return sum(1 for x in values if self.update(x) is not None)

    def state(self) -> dict[str, object]:
        return {
            "detector": self.detector.type,
            "drifting": self.drifting,
            "confirming": self.confirming,
            "baseline": self.baseline,
            "current": self.current,
            "estimate": self.detector.estimate,
            "fired": self.fired,
            "suppressed": self.suppressed,
        }
