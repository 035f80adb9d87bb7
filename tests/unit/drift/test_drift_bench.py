"""The drift benchmark's detection pieces: records carry the stream's values, delays are counted from the
change (a miss is the rest of the stream), and the service and river see the same stream."""

from __future__ import annotations

import asyncio

import pytest

from mlops.bench import drift_alerts as bench
from mlops.bench import drift_streams as ds
from services.drift.detectors import AdwinConfig


def test_delay_is_counted_from_the_change_and_a_miss_is_the_rest_of_the_stream() -> None:
    assert bench.delay([10, 5030, 5100], 5000, 12_000) == (30, True)
    assert bench.delay([10], 5000, 12_000) == (7000, False)


def test_the_step_stream_moves_the_error_rate_from_010_to_025() -> None:
    errors = bench.step_stream(40_000, 20_000, seed=3, loss="zero_one")
    assert errors[:20_000].mean() == pytest.approx(0.10, abs=0.01)
    assert errors[20_000:].mean() == pytest.approx(0.25, abs=0.01)
    losses = bench.step_stream(40_000, 20_000, seed=3)
    assert set(losses.round(3)) == {0.223, 1.609}


@pytest.mark.parametrize("signal", ["log_loss", "zero_one", "score"])
def test_both_sides_see_the_change_at_the_same_value(signal: str) -> None:
    """The service's alert (after its rules, through DriftMonitor's records) is at river's first firing."""
    values = (ds.score_stream(4000, 2000, seed=7) if signal == "score"
              else bench.step_stream(4000, 1000, seed=7, loss=signal))
    change = 2000 if signal == "score" else 1000
    settings = bench._settings("adwin", signal)  # type: ignore[arg-type]
    service = asyncio.run(bench.service_alerts(settings, signal, values))  # type: ignore[arg-type]
    river = bench.river_firings(settings.detector_for(signal), values)  # type: ignore[arg-type]
    assert settings.detector_for(signal) == AdwinConfig()  # type: ignore[arg-type]
    first = next(r for r in river if r >= change)
    assert service and service[0] == first, (service, river)
