"""The offline store: validated events appended as Parquet files, partitioned by stream and by the date of
their event time (``<root>/<stream>/date=YYYY-MM-DD/part-<uuid>.parquet``), and read back for training sets.

Rows keep their event time and event_id. Delivery is at least once, so a file may repeat events that
another file holds (a batch written, then the process killed before its offsets were committed); every
read keeps the first copy of each event_id.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

META_COLUMNS = ("entity_id", "event_time", "event_id")


class OfflineWriter:
    """Buffers rows and writes one Parquet file per (stream, date) on :meth:`flush`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._rows: list[tuple[str, dict[str, Any]]] = []
        self._since = 0.0

    @property
    def pending(self) -> int:
        return len(self._rows)

    @property
    def age_s(self) -> float:
        """Seconds since the oldest buffered row came in (0 when none)."""
        return time.monotonic() - self._since if self._rows else 0.0

    def add(self, stream: str, row: dict[str, Any]) -> None:
        if not self._rows:
            self._since = time.monotonic()
        self._rows.append((stream, row))

    async def flush(self) -> int:
        """Write every buffered row (files appear atomically); returns how many rows were written."""
        if not self._rows:
            return 0
        rows = self._rows
        await asyncio.to_thread(self._write, rows)
        # Cleared only after the write: a failed flush keeps the rows for the retry.
        self._rows = self._rows[len(rows):]
        return len(rows)

    def _write(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for stream, row in rows:
            groups[(stream, row["event_time"].strftime("%Y-%m-%d"))].append(row)
        for (stream, day), part in groups.items():
            directory = self.root / stream / f"date={day}"
            directory.mkdir(parents=True, exist_ok=True)
            name = f"part-{uuid.uuid4().hex}.parquet"
            tmp = directory / f".{name}.tmp"
            pq.write_table(table(part), tmp)
            tmp.replace(directory / name)


def _column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        # A field whose type changed between schema versions within one file: keep every value, as JSON.
        return pa.array([None if v is None else json.dumps(v, default=str) for v in values], pa.string())


def table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as a table with a column for every key any row has, meta columns first (``Table.from_pylist``
    takes the first row's keys only, which would drop an optional field the first event lacked); a column
    of mixed types is kept as JSON text rather than refused."""
    names: dict[str, None] = dict.fromkeys(META_COLUMNS)
    for row in rows:
        for key in row:
            if key not in names:
                names[key] = None
    return pa.table({name: _column([row.get(name) for row in rows]) for name in names})


def streams(root: Path) -> list[str]:
    """The streams the offline store holds."""
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


def files(root: Path, stream: str, start: datetime | None = None, end: datetime | None = None) -> list[Path]:
    """The stream's Parquet files whose date partition can hold events in ``[start, end)``."""
    out = []
    for part in sorted((root / stream).glob("date=*")):
        try:
            day = date.fromisoformat(part.name[5:])
        except ValueError:
            continue
        if (start and day < start.astimezone(UTC).date()) or (end and day > end.astimezone(UTC).date()):
            continue
        out.extend(sorted(part.glob("part-*.parquet")))
    return out


def read_stream(root: Path, stream: str, start: datetime | None = None, end: datetime | None = None,
                entities: set[str] | None = None, columns: set[str] | None = None) -> list[dict[str, Any]]:
    """Every row of ``stream`` once (first copy of each event_id) with event time in ``[start, end)``,
    optionally only of ``entities`` and only ``columns`` (besides the meta columns), ordered by
    (event time, event_id)."""
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    wanted = pa.array(sorted(entities), pa.string()) if entities is not None else None
    for f in files(root, stream, start, end):
        names = pq.read_schema(f).names
        cols = names if columns is None else [c for c in names if c in META_COLUMNS or c in columns]
        part = pq.read_table(f, columns=cols)
        if wanted is not None:
            part = part.filter(pc.is_in(part["entity_id"], value_set=wanted))
        for row in part.to_pylist():
            if row["event_id"] in seen:
                continue
            seen.add(row["event_id"])
            t = row["event_time"]
            if (start and t < start) or (end and t >= end):
                continue
            rows.append(row)
    rows.sort(key=lambda r: (r["event_time"], r["event_id"]))
    return rows


def has_column(root: Path, stream: str, column: str) -> bool:
    """Whether any of the stream's files has ``column`` (Parquet footers only)."""
    return any(column in pq.read_schema(f).names for f in files(root, stream))
