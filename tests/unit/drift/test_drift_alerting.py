"""The alerting rules after a detector fires (:class:`services.drift.sequential.Sequential`): a firing is
an alert at that value when the values since the change show the effect; one that does not keeps its
values out of the baseline for a post-firing window and is alerted when the effect shows there; and a
detector that cannot fire on a signal is refused for it, with what to use instead."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError
from river import drift as river_drift

from services.drift import detectors
from services.drift.sequential import Sequential, SequentialConfig
from services.drift.settings import DriftSettings

CHANGE = 1000


class FiresAt(detectors.DriftDetector):
    """A detector that fires at the values it is told to: the discipline alone under test."""

    type = "fires_at"

    def __init__(self, at: set[int]) -> None:
        self._at, self._i = at, -1

    def update(self, x: float) -> bool:
        self._i += 1
        return self._i in self._at

    @property
    def threshold(self) -> float:
        return 0.0


def _error_rate_stream(seed: int) -> np.ndarray:
    """Per-example log loss of a model that gives the true label 0.8 when right and 0.2 when wrong, its
    error rate going from 0.10 to 0.25 at CHANGE (the issue's stream)."""
    rng = np.random.default_rng(seed)
    wrong = np.concatenate([rng.random(CHANGE) < 0.10, rng.random(3000) < 0.25])
    return np.where(wrong, -math.log(0.2), -math.log(0.8))


def test_an_abrupt_change_the_old_rule_swallowed_is_alerted_at_the_detectors_firing() -> None:
    """Seed 7 under ADWIN: the firing's last 100 values had not moved by 0.1 and 3 standard errors within
    100 values, so the old rule suppressed it and let the new level into the baseline; ADWIN, adapted,
    never fired again and the change was never alerted."""
    stream = _error_rate_stream(7)
    settings = DriftSettings()
    seq = Sequential(detectors.build(settings.detector_for("log_loss")), settings.concept)
    alerts = [i for i, x in enumerate(stream) if seq.update(float(x)) is not None]
    river = river_drift.ADWIN(delta=0.002, clock=32)
    firings = [i for i, x in enumerate(stream) if river.update(float(x)) is None and river.drift_detected]
    first = next(i for i in firings if i >= CHANGE)
    assert alerts == [first], (alerts, firings)


@pytest.mark.parametrize("seed", range(7, 17))
def test_every_error_rate_change_is_alerted_within_the_detectors_delay(seed: int) -> None:
    for kind in ("adwin", "page_hinkley"):
        settings = DriftSettings(detector={"type": kind})
        config = settings.detector_for("log_loss")
        seq = Sequential(detectors.build(config), settings.concept)
        raw = detectors.build(config)
        stream = _error_rate_stream(seed)
        alerts = [i for i, x in enumerate(stream) if seq.update(float(x)) is not None]
        firings = [i for i, x in enumerate(stream) if raw.update(float(x))]
        first = next(i for i in firings if i >= CHANGE)
        assert [a for a in alerts if a >= CHANGE], f"{kind}: missed ({firings})"
        assert alerts[-1] - CHANGE <= 1.2 * (first - CHANGE), (kind, alerts, firings)


def _level(n: int, mean: float, seed: int) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, 0.05, n))


def test_a_firing_without_the_effect_keeps_its_window_and_a_change_inside_it_is_alerted() -> None:
    """The detector fires at 1000 on noise and never again; the level rises at 1200, inside the window."""
    config = SequentialConfig(min_effect=0.1, direction="up", confirm_window=500)
    seq = Sequential(FiresAt({1000}), config)
    stream = _level(1200, 0.1, seed=1) + _level(800, 0.3, seed=2)
    firings = [(i, f) for i, x in enumerate(stream) if (f := seq.update(x)) is not None]
    [(at, firing)] = firings
    assert 1200 <= at <= 1200 + config.min_values, at
    assert seq.suppressed == 0 and firing.baseline == pytest.approx(0.1, abs=0.01), "the window stayed out of it"
    assert firing.current - firing.baseline >= config.min_effect and firing.z >= config.min_z


def test_a_window_that_passes_without_the_effect_joins_the_baseline_by_the_stated_rule() -> None:
    """Fired at 1000 on noise; nothing moved for 500 values: suppressed, and its values join the baseline.
    A rise after the window closed is not this firing's (the detector must fire on it)."""
    config = SequentialConfig(min_effect=0.1, direction="up", confirm_window=500)
    seq = Sequential(FiresAt({1000}), config)
    stream = _level(1600, 0.1, seed=3) + _level(400, 0.3, seed=4)
    alerts = [i for i, x in enumerate(stream) if seq.update(x) is not None]
    assert alerts == [] and seq.suppressed == 1 and not seq.confirming
    small = Sequential(FiresAt({1000}), config)
    below = [i for i, x in enumerate(_level(1000, 0.1, seed=5) + _level(1000, 0.15, seed=6)) if small.update(x)]
    assert below == [] and small.suppressed == 1, "a move under min_effect is not alerted, however certain"


def test_after_an_alert_the_stream_drifts_until_it_settles() -> None:
    config = SequentialConfig(min_effect=0.1, direction="up", settle=300)
    seq = Sequential(FiresAt({1020, 1100, 1200, 2000}), config)
    stream = _level(1000, 0.1, seed=7) + _level(1500, 0.3, seed=8)
    alerts = [i for i, x in enumerate(stream) if seq.update(x) is not None]
    assert alerts == [1020], "one shift, one alert, at the firing: later firings restart the calm count"
    assert not seq.drifting and seq.baseline == pytest.approx(0.3, abs=0.01), "settled at the new level"


@pytest.mark.parametrize("loss", ["zero_one", "log_loss"])
def test_kswin_is_refused_for_a_loss_with_what_to_use_instead(loss: str) -> None:
    with pytest.raises(ValidationError) as refused:
        DriftSettings(detector={"type": "kswin"}, concept_loss=loss)
    message = str(refused.value)
    assert "kswin cannot watch" in message and "use adwin or page_hinkley" in message
    assert "stat_size >= 1221" in message
    # Accepted where it can fire: on the score (concept drift off), or with samples large enough.
    assert DriftSettings(detector={"type": "kswin"}, concept_detection=False).detector.type == "kswin"
    big = DriftSettings(detector={"type": "kswin", "stat_size": 1221, "window_size": 2500}, concept_loss=loss)
    assert detectors.refusal(big.detector, loss, 0.1) is None  # type: ignore[arg-type]
    DriftSettings(detector={"type": "adwin"}, concept_loss=loss)
    DriftSettings(detector={"type": "page_hinkley"}, concept_loss=loss)


def test_kswin_with_the_old_defaults_never_fires_on_a_zero_one_error_rate_change() -> None:
    """Why it is refused: the old defaults (alpha 0.001, window 300, stat 100) on the error rate going
    from 0.10 to 0.25 (the refusal names the distance it needs: 0.28)."""
    old = detectors.KswinConfig(alpha=0.001, window_size=300, stat_size=100)
    assert detectors.kswin_critical_distance(old) == pytest.approx(0.276, abs=0.001)
    rng = np.random.default_rng(7)
    stream = np.concatenate([rng.random(1000) < 0.10, rng.random(3000) < 0.25]).astype(float)
    kswin = detectors.build(old)
    assert not any(kswin.update(float(x)) for x in stream[CHANGE:])


def test_parameters_left_unset_take_the_signals_defaults() -> None:
    settings = DriftSettings(detector={"type": "page_hinkley"})
    assert settings.detector_for("log_loss").threshold == 100 and settings.detector_for("score").threshold == 30
    assert settings.detector_for("zero_one").threshold == 60
    mine = DriftSettings(detector={"type": "page_hinkley", "threshold": 7, "delta": 0.01})
    assert mine.detector_for("log_loss").threshold == 7 and mine.detector_for("log_loss").delta == 0.01
    assert DriftSettings().detector_for("score") == detectors.AdwinConfig()
    with pytest.raises(ValidationError):
        DriftSettings(detector={"type": "kswin", "window_size": 100, "stat_size": 100})
