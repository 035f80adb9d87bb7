"""Times from callers: one reading for all of them. A time without an offset is UTC (the platform stores
and compares aware UTC times only; comparing a naive time with an aware one raised TypeError, a 500)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware time: a naive one is taken to be UTC, an aware one is converted to UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: A datetime field or query parameter read as UTC when it has no offset (``2020-01-01T00:00:00``).
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
