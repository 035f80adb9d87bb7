"""Inline label rows' times: every value a caller may send is a time or a 400, never a 500."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mlops.errors import InvalidArgument
from services.feature.datasets import _parse_time


@pytest.mark.parametrize("value", [1e20, -1e20, 10**30, float("inf"), float("nan"), "99999-01-01", "yesterday",
                                   None, [1], {"t": 1}, True])
def test_out_of_range_or_wrong_times_are_invalid(value: object) -> None:
    with pytest.raises(InvalidArgument) as err:
        _parse_time(value, 3)
    assert err.value.field == "rows" and "row 3" in err.value.message


def test_times_without_an_offset_are_utc() -> None:
    assert _parse_time("2026-01-02T03:04:05", 0) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert _parse_time(0, 0) == datetime(1970, 1, 1, tzinfo=UTC)
