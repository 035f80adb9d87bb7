"""The drift benchmark's pieces: label records reproduce the loss stream, delays are counted from the
change, and the service and river sides see the same stream."""

from __future__ import annotations

import asyncio

import pytest

from mlops.bench import drift as bench
from mlops.bench import drift_streams as ds
from services.drift.detectors import AdwinConfig
from services.drift.report import example_loss


def test_label_records_carry_the_streams_loss() -> None:
    losses = ds.loss_stream(300, 150, seed=7)
    labels = bench._labels(losses)
    assert [example_loss(list(x.outputs), x.label) for x in labels] == pytest.approx(list(losses), abs=1e-9)
    assert labels[100].time.seconds - labels[0].time.seconds == 1, "100 labels a second"


def test_delay_is_counted_from_the_change_and_a_miss_is_the_rest_of_the_stream() -> None:
    assert bench._delay([10, 5030, 5100], 5000, 12_000) == (30.0, True)
    assert bench._delay([10], 5000, 12_000) == (7000.0, False)


def test_both_sides_alert_after_an_abrupt_change() -> None:
    losses = ds.loss_stream(8000, 5000, seed=7)
    service = asyncio.run(bench._service_alerts(AdwinConfig(), losses))
    river = bench._river_alerts(AdwinConfig(), losses)
    assert len(service) == 1 and 5000 <= service[0] <= 5200
    assert river and 5000 <= river[0] <= service[0]
