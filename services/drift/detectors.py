"""Pluggable streaming drift detectors: an abstract base plus river-backed implementations, each with
its own typed config chosen by ``type`` (adwin, the default; page_hinkley; kswin).

Detector state lives in process memory. It is not persisted as such: the service keeps the recent
stream of each model version in Redis and replays it into a fresh detector when a process first meets
that version (after a restart or a rebalance), so a detector is rebuilt rather than restored.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
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
    abrupt concept changes of the acceptance streams (a test run every value at alpha 0.005 has little
    power on a mixed per-example loss), while 100 against 100 at 0.001 caught each within 60 values.
    """

    model_config = ConfigDict(extra="forbid")
    type: Literal["kswin"] = "kswin"
    alpha: float = Field(0.001, gt=0, lt=1)
    window_size: int = Field(300, gt=0)
    stat_size: int = Field(100, gt=0)
    seed: int | None = 42


DetectorConfig = Annotated[AdwinConfig | PageHinkleyConfig | KswinConfig, Field(discriminator="type")]


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


def build(config: AdwinConfig | PageHinkleyConfig | KswinConfig) -> DriftDetector:
    """A fresh detector for ``config``; its ``type`` picks the implementation."""
    return _FACTORIES[config.type](config)
