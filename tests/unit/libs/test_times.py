"""A time without an offset is UTC, everywhere a caller gives one (the shared annotated type)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from pydantic import TypeAdapter

from mlops.times import UtcDatetime, as_utc


def test_naive_is_utc_and_aware_is_converted() -> None:
    assert as_utc(datetime(2020, 1, 1)) == datetime(2020, 1, 1, tzinfo=UTC)
    plus2 = datetime(2020, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert as_utc(plus2) == datetime(2020, 1, 1, tzinfo=UTC)
    assert as_utc(plus2).tzinfo is UTC


def test_the_annotated_type_reads_iso_text_as_utc() -> None:
    adapter = TypeAdapter(UtcDatetime | None)
    naive, aware = adapter.validate_python("2020-01-01T00:00:00"), adapter.validate_python("2020-01-01T01:00:00+01:00")
    assert naive == aware == datetime(2020, 1, 1, tzinfo=UTC)
    assert naive < datetime(2020, 1, 2, tzinfo=UTC)  # comparable with aware times: no TypeError
    assert adapter.validate_python(None) is None
