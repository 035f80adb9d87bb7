"""A streaming detector with the alert discipline around it: an effect-size gate, hysteresis and a
level baseline, so that one shift gives one alert and tiny-but-significant moves give none.

A river detector fires whenever its test rejects "no change"; on a long stable stream that includes
moves too small to matter, and after a real shift it keeps firing while the stream settles (PageHinkley
on log loss fired 101 times for one shift here). :class:`Sequential` turns those firings into alerts:

- *stable*: values feed a baseline (running mean since the stream last settled). A firing becomes an
  alert only if, within the next ``effect_window`` values, the mean of the last ``effect_window`` values
  moves from the baseline by at least ``min_effect`` in the watched ``direction``; otherwise it is
  counted as suppressed.
- *drifting*: after an alert no further alert is raised; every firing restarts a quiet count, and after
  ``settle`` values without one the stream is stable again with the mean of the recent values as its new
  baseline (hysteresis: entering needs a firing plus an effect, leaving needs a long calm).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
    effect_window: int = Field(100, gt=1, description="Recent values whose mean is compared with the baseline.")
    settle: int = Field(500, gt=0, description="Values without a firing before a drifting stream is stable again.")
    min_baseline: int = Field(100, gt=0, description="Values the baseline needs before any alert.")


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

    def __init__(self, detector: detectors.DriftDetector, config: SequentialConfig) -> None:
        self.detector = detector
        self.config = config
        self.drifting = False
        self.fired = 0  # every firing of the detector
        self.suppressed = 0  # firings in the stable state without the effect
        self.alerts = 0
        self._recent: deque[float] = deque(maxlen=config.effect_window)
        self._base = _Moments()
        self._after = _Moments()  # values since the last firing while drifting: the next baseline
        self._pending = 0  # values left for a firing to show its effect

    @property
    def baseline(self) -> float | None:
        return self._base.mean if self._base.n else None

    @property
    def current(self) -> float | None:
        return sum(self._recent) / len(self._recent) if self._recent else None

    def _effect(self) -> Firing | None:
        n = len(self._recent)
        mean = sum(self._recent) / n
        var = sum((x - mean) ** 2 for x in self._recent) / max(n - 1, 1)
        delta = mean - self._base.mean
        se = math.sqrt(var / n + self._base.var / self._base.n)
        z = delta / se if se > 0 else (math.inf if delta else 0.0)
        signed = {"up": (delta, z), "down": (-delta, -z), "both": (abs(delta), abs(z))}[self.config.direction]
        if signed[0] >= self.config.min_effect and signed[1] >= self.config.min_z:
            return Firing(self._base.mean, mean, delta, z, self._base.n, n)
        return None

    def update(self, x: float) -> Firing | None:
        fired = self.detector.update(x)
        self._recent.append(x)
        self.fired += fired
        if self.drifting:
            if fired:
                self._after = _Moments()
            self._after.add(x)
            if self._after.n >= self.config.settle:
                # Settled at a new level: that level is the baseline from now on.
                self.drifting, self._base, self._after = False, self._after, _Moments()
            return None
        if fired and self._base.n >= self.config.min_baseline and not self._pending:
            # A quick detector fires while the recent window still holds values from before the change:
            # the firing stays pending (its values kept out of the baseline) until the effect shows or the
            # window has turned over once.
            self._pending = self.config.effect_window
        if self._pending:
            self._pending -= 1
            firing = self._effect()
            if firing is not None:
                self.drifting, self._pending, self._after = True, 0, _Moments()
                self.alerts += 1
                return firing
            if not self._pending:
                self.suppressed += 1
            return None
        self._base.add(x)
        return None

    def replay(self, values: Iterable[float]) -> int:
        """Feed past values without reporting (rebuilding after a restart); returns the alerts they held."""
        return sum(1 for x in values if self.update(x) is not None)

    def state(self) -> dict[str, object]:
        return {
            "detector": self.detector.type,
            "drifting": self.drifting,
            "baseline": self.baseline,
            "current": self.current,
            "estimate": self.detector.estimate,
            "fired": self.fired,
            "suppressed": self.suppressed,
        }
