"""REST bodies of the registry: what SQLite and JSON cannot hold is refused at the edge (a 400), not
stored to fail later (a 500 on the insert, or on every read of the run)."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from services.registry.http import INT64_MAX, INT64_MIN, MetricIn, RunCreate, RunUpdate


@pytest.mark.parametrize("seed", [INT64_MAX + 1, INT64_MIN - 1, -(10**30)])
def test_a_seed_past_64_bits_is_refused(seed: int) -> None:
    with pytest.raises(ValidationError):
        RunCreate(experiment="e", seed=seed)


def test_seeds_within_64_bits_pass() -> None:
    assert RunCreate(experiment="e", seed=INT64_MAX).seed == INT64_MAX
    assert RunCreate(experiment="e", seed=-1).seed == -1


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_metric_values_must_be_finite(value: float) -> None:
    with pytest.raises(ValidationError):
        MetricIn(key="loss", value=value)
    with pytest.raises(ValidationError):
        RunUpdate(metrics={"loss": value})


def test_a_step_past_64_bits_is_refused() -> None:
    with pytest.raises(ValidationError):
        MetricIn(key="loss", value=0.5, step=INT64_MAX + 1)
    assert MetricIn(key="loss", value=0.5, step=INT64_MAX).step == INT64_MAX
