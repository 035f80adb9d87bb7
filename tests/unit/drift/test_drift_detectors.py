"""Detectors: chosen by ``type``, each sees a shift in the mean, stays quiet on a stable stream, rebuilds by replay."""

from __future__ import annotations

import random

import pytest
from pydantic import TypeAdapter, ValidationError

from services.drift import detectors
from services.drift.settings import DriftSettings


def _stream(n: int, shift_at: int | None, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0.25 if shift_at is None or i < shift_at else 0.65, 0.08) for i in range(n)]


CONFIGS = [detectors.AdwinConfig(), detectors.PageHinkleyConfig(threshold=5.0), detectors.KswinConfig(alpha=0.0001)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.type)
def test_detects_a_mean_shift_soon_after_it(config: detectors.DetectorConfig) -> None:
    detector = detectors.build(config)
    assert detector.type == config.type
    hits = [i for i, x in enumerate(_stream(1500, shift_at=1000)) if detector.update(x)]
    after = [i for i in hits if i >= 1000]
    assert after and after[0] < 1000 + 200


def test_adwin_is_quiet_on_a_stable_stream_and_estimates_the_mean() -> None:
    detector = detectors.build(detectors.AdwinConfig())
    assert not any(detector.update(x) for x in _stream(3000, shift_at=None))
    assert detector.estimate == pytest.approx(0.25, abs=0.02)
    assert detector.threshold == 0.002


def test_replay_rebuilds_the_same_state() -> None:
    values = _stream(1200, shift_at=None)
    a, b = detectors.build(detectors.AdwinConfig()), detectors.build(detectors.AdwinConfig())
    for x in values:
        a.update(x)
    b.replay(values)
    assert a.estimate == b.estimate
    tail = _stream(300, shift_at=0, seed=8)
    assert [a.update(x) for x in tail] == [b.update(x) for x in tail]


def test_config_is_picked_by_type() -> None:
    adapter: TypeAdapter[detectors.DetectorConfig] = TypeAdapter(detectors.DetectorConfig)
    assert isinstance(adapter.validate_python({"type": "page_hinkley"}), detectors.PageHinkleyConfig)
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "nope"})
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "adwin", "delta": 2})


def test_settings_read_the_detector_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DriftSettings().detector.type == "adwin"
    monkeypatch.setenv("MLOPS_DRIFT_DETECTOR", '{"type": "kswin", "alpha": 0.001}')
    monkeypatch.setenv("MLOPS_DRIFT_CONCEPT_DETECTION", "false")  # kswin watches the score, not a loss
    detector = DriftSettings().detector
    assert isinstance(detector, detectors.KswinConfig) and detector.alpha == 0.001
