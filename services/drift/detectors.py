"""Pluggable streaming drift detectors: an abstract base plus river-backed implementations, each with
its own typed config chosen by ``type`` (adwin, the default; page_hinkley; kswin).

The signals differ (a positive-class score in [0, 1] with a spread of ~0.1, a per-example log loss with
a heavy tail, a 0/1 error), so a parameter a config leaves unset takes a default per detector and
signal kind (:data:`SIGNAL_DEFAULTS`, measured with ``./scripts/bench drift``), and a detector that cannot
see a change worth alerting on a signal is refused for it (:func:`refusal`).

Detector state lives in process memory. It is not persisted as such: the service keeps the recent
stream of each model version in Redis and replays it into a fresh detector when a process first meets
that version (after a restart or a rebalance), so a detector is rebuilt rather than restored.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from river import drift


class AdwinConfig(BaseModel):
    """ADaptive WINdowing (Bifet & Gavalda 2007): a change in the mean, with confidence ``delta``."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["adwin"] = "adwin"
    delta: float = Field(0.002, gt=0, lt=1)
    clock: int = Field(32, gt=0)
    max_buckets: int = Field(5, gt=0)
    min_window_length: int = Field(5, gt=0)
    grace_period: int = Field(10, gt=0)


class PageHinkleyConfig(BaseModel):
    """Page-Hinkley: a cumulative deviation from the mean beyond ``threshold``."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["page_hinkley"] = "page_hinkley"
    min_instances: int = Field(30, gt=0)
    delta: float = Field(0.005, ge=0)
    threshold: float = Field(50.0, gt=0)
    alpha: float = Field(0.9999, gt=0, le=1)
    mode: Literal["up", "down", "both"] = "both"


class KswinConfig(BaseModel):
    """Kolmogorov-Smirnov windowing: the last ``stat_size`` values against a sample of the window.

    The defaults are larger than river's (100 / 30 / 0.005): 30 values against 30 missed half of the
    abrupt concept changes of the acceptance streams; 100 against 100 in a window of 300 at 0.001 missed
    gradual changes 1,000 values wide (the window never held both levels) and, testing at every value,
    fired 30 times per 100k on a stationary score. 300 against 300 in a window of 1,000 at 1e-5 caught every
    abrupt, gradual and score change of the bench and fired at most once per 100k. Not for a per-example
    loss (:func:`refusal`).
    """

    model_config = ConfigDict(extra="forbid")
    type: Literal["kswin"] = "kswin"
    alpha: float = Field(1e-5, gt=0, lt=1)
    window_size: int = Field(1000, gt=0)
    stat_size: int = Field(300, gt=0)
    seed: int | None = 42

    @model_validator(mode="after")
    def _window_holds_two_samples(self) -> KswinConfig:
        if self.window_size < 2 * self.stat_size:
            raise ValueError("kswin window_size must be at least twice stat_size (the test compares two samples)")
        return self


DetectorConfig = Annotated[AdwinConfig | PageHinkleyConfig | KswinConfig, Field(discriminator="type")]

#: what a detector watches: the positive-class score, or the per-example loss (log loss, or 0/1 error)
Signal = Literal["score", "log_loss", "zero_one"]
SIGNALS: tuple[Signal, ...] = ("score", "log_loss", "zero_one")

#: Per detector and signal kind, the defaults of the parameters a config leaves unset. PageHinkley's
#: threshold is the smallest that fired about once per 100,000 values of stationary streams (5 of the
#: score, 3 of each loss; river's 50 fired 7-10 times per 100k on log loss). A larger ``delta`` cut few
#: false alarms and lost moderate changes: river's PageHinkley measures from the mean since the start,
#: which follows a change, so with 0.05 an error rate going from 0.10 to 0.25 after 1,000 values was never
#: detected. ADWIN needs none (0 per 100k on each). KSWIN: see :class:`KswinConfig`.
SIGNAL_DEFAULTS: dict[str, dict[Signal, dict[str, float]]] = {
    "page_hinkley": {
        "score": {"threshold": 30.0},
        "log_loss": {"threshold": 100.0},
        "zero_one": {"threshold": 60.0},
    },
}


def for_signal(config: DetectorConfig, signal: Signal) -> DetectorConfig:
    """``config`` with the parameters it leaves unset at their defaults for ``signal``."""
    defaults = {k: v for k, v in SIGNAL_DEFAULTS.get(config.type, {}).get(signal, {}).items()
                if k not in config.model_fields_set}
    return config.model_copy(update=defaults) if defaults else config


def kswin_critical_distance(config: KswinConfig) -> float:
    """The smallest Kolmogorov-Smirnov distance KSWIN's test can reject at its ``alpha`` (two samples of
    ``stat_size``; river also needs the distance above 0.1)."""
    c_alpha = math.sqrt(-math.log(config.alpha / 2) / 2)
    return max(0.1, c_alpha * math.sqrt(2 / config.stat_size))


def refusal(config: DetectorConfig, signal: Signal, min_effect: float) -> str | None:
    """Why ``config`` cannot watch ``signal`` (it would never fire on a move of ``min_effect``), or None.

    On a 0/1 loss the KS distance of two samples is the difference of their error rates, and on a log
    loss it is at most the share of examples whose loss moved (a model answering with a few confidence
    levels makes the log loss few-valued too): KSWIN fires only when that share moved by its critical
    distance, 0.28 at alpha 0.001 and 100 values a side (0.20 with the defaults), which an error rate
    going from 0.10 to 0.25 never reaches (missed 6 of 6 times on the 0/1 loss, 4 of 5 on the log loss).
    """
    if config.type != "kswin" or signal == "score":
        return None
    distance = kswin_critical_distance(for_signal(config, signal))  # type: ignore[arg-type]
    if distance <= min_effect:
        return None
    needed = math.ceil(2 * (math.sqrt(-math.log(config.alpha / 2) / 2) / min_effect) ** 2)
    what = "a 0/1 loss" if signal == "zero_one" else "a per-example log loss"
    return (f"kswin cannot watch {what}: its KS test fires only when the share of errors moves by {distance:.2f} "
            f"(alpha {config.alpha:g}, stat_size {config.stat_size}), more than the {min_effect:g} worth an "
            f"alert; use adwin or page_hinkley for concept drift (kswin suits the score), or kswin with "
            f"stat_size >= {needed} (and window_size at least twice that)")


class DriftDetector(abc.ABC):
    """Consumes one numeric stream and says when its distribution changed."""

    type: ClassVar[str]

    @abc.abstractmethod
    def update(self, x: float) -> bool:
        """Add one value; True when a drift is detected at this value."""

    @property
    @abc.abstractmethod
    def threshold(self) -> float:
        """The detector's sensitivity parameter, reported in alerts."""

    @property
    def estimate(self) -> float | None:
        """The detector's current estimate of the stream's level, when it has one."""
        return None

    def replay(self, values: Iterable[float]) -> int:
        """Feed past values without reporting; returns how many drifts they contained."""
        return sum(1 for x in values if self.update(x))


class _RiverDetector(DriftDetector):
    def __init__(self, detector: drift.ADWIN | drift.PageHinkley | drift.KSWIN) -> None:
        self._d = detector

    def update(self, x: float) -> bool:
        self._d.update(x)
        return bool(self._d.drift_detected)


class AdwinDetector(_RiverDetector):
    type = "adwin"

    def __init__(self, config: AdwinConfig) -> None:
        super().__init__(drift.ADWIN(**config.model_dump(exclude={"type"})))
        self._config = config

    @property
    def threshold(self) -> float:
        return self._config.delta

    @property
    def estimate(self) -> float | None:
        return float(self._d.estimation) if self._d.width else None  # type: ignore[union-attr]


class PageHinkleyDetector(_RiverDetector):
    type = "page_hinkley"

    def __init__(self, config: PageHinkleyConfig) -> None:
        super().__init__(drift.PageHinkley(**config.model_dump(exclude={"type"})))
        self._config = config

    @property
    def threshold(self) -> float:
        return self._config.threshold


class KswinDetector(_RiverDetector):
    type = "kswin"

    def __init__(self, config: KswinConfig) -> None:
        super().__init__(drift.KSWIN(**config.model_dump(exclude={"type"})))
        self._config = config

    @property
    def threshold(self) -> float:
        return self._config.alpha


_FACTORIES: dict[str, Callable[..., DriftDetector]] = {
    "adwin": AdwinDetector,
    "page_hinkley": PageHinkleyDetector,
    "kswin": KswinDetector,
}


def build(config: DetectorConfig, signal: Signal | None = None) -> DriftDetector:
    """A fresh detector for ``config`` (with ``signal``'s defaults for what it leaves unset); its ``type``
    picks the implementation."""
    return _FACTORIES[config.type](for_signal(config, signal) if signal is not None else config)
