"""The offline store: validated events appended as Parquet files, partitioned by stream and by the date of
their event time (``<root>/<stream>/date=YYYY-MM-DD/part-<uuid>.parquet``), and read back for training sets.

Rows keep their event time and event_id. Delivery is at least once, so a file may repeat events that
another file holds (a batch written, then the process killed before its offsets were committed); every
read keeps the first copy of each event_id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlops.names import check_name, is_name, safe_join

log = logging.getLogger(__name__)
META_COLUMNS = ("entity_id", "event_time", "event_id")


class OfflineWriter:
    """Buffers events and writes one Parquet file per (stream, date) on :meth:`flush`.

    Events are kept as they come (event time in integer microseconds, fields as decoded) and turned into
    columns only when written: a row dict and a datetime per event cost the feature service more than
    the Parquet write itself."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._rows: list[_Buffered] = []
        self._since = 0.0
        self._flushing = asyncio.Lock()
        self._writing = 0  # rows of the flush in progress
        _warm_up()

    @property
    def pending(self) -> int:
        """Rows not yet durable: buffered, or being written."""
        return len(self._rows) + self._writing

    @property
    def age_s(self) -> float:
        """Seconds since the oldest buffered row came in (0 when none)."""
        return time.monotonic() - self._since if self._rows else 0.0

    def extend(self, rows: list[_Buffered]) -> None:
        """Buffer events, each ``(stream, entity_id, event time in microseconds since the epoch (UTC),
        event_id, fields)``; fields are kept by reference (meta names among them are dropped when written)."""
        if rows and not self._rows:
            self._since = time.monotonic()
        self._rows.extend(rows)

    def add(self, stream: str, row: dict[str, Any]) -> None:
        """Buffer one row given as a dict with ``entity_id``, ``event_time`` (a datetime; naive means UTC)
        and ``event_id`` besides its fields."""
        when: datetime = row["event_time"]
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        fields = {k: v for k, v in row.items() if k not in META_COLUMNS}
        self.extend([(stream, row["entity_id"], (when - _EPOCH) // _MICROSECOND, row["event_id"], fields)])

    async def flush(self) -> int:
        """Write every buffered row (files appear atomically); returns how many rows were written. Flushes
        run one at a time (the consumer's partitions call it concurrently); rows added during one wait
        for the next."""
        async with self._flushing:
            if not self._rows:
                return 0
            rows, self._rows = self._rows, []
            self._writing = len(rows)
            try:
                await asyncio.to_thread(self._write, rows)
            except BaseException:
                self._rows = rows + self._rows  # kept, in order, for the retry
                raise
            finally:
                self._writing = 0
            return len(rows)

    def _write(self, rows: list[_Buffered]) -> None:
        groups: dict[tuple[str, int], list[_Buffered]] = defaultdict(list)
        for row in rows:
            groups[(row[0], row[2] // _DAY_US)].append(row)
        for (stream, day), part in groups.items():
            # Streams were checked by ingest; checked again here, where they become directories. A bad one
            # is dropped (raising would keep the whole buffer for a retry that can never succeed).
            if not is_name(stream):
                log.warning("dropped %d offline rows of stream %r: not a valid name", len(part), stream[:80])
                continue
            directory = safe_join(self.root, stream, f"date={(_EPOCH_DATE + timedelta(days=day)).isoformat()}",
                                  field="stream")
            directory.mkdir(parents=True, exist_ok=True)
            name = f"part-{uuid.uuid4().hex}.parquet"
            tmp = directory / f".{name}.tmp"
            pq.write_table(_buffered_table(part), tmp)
            tmp.replace(directory / name)


#: a buffered event: (stream, entity_id, event time us, event_id, fields)
_Buffered = tuple[str, str, int, str, dict[str, Any]]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = _EPOCH.date()
_MICROSECOND = timedelta(microseconds=1)
_DAY_US = 86_400_000_000
_EVENT_TIME = pa.timestamp("us", tz="UTC")


def _warm_up() -> None:
    """Convert one row, at start: pyarrow's first conversion of Python values imports some 400 modules
    (~0.2 s of CPU, holding the GIL), which would otherwise stall the first flush after every restart."""
    pq.write_table(_buffered_table([("", "", 0, "", {"x": 0.0, "s": ""})]), pa.BufferOutputStream())


def _column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        # A field whose type changed between schema versions within one file: keep every value, as JSON.
        return pa.array([None if v is None else json.dumps(v, default=str) for v in values], pa.string())


def _buffered_table(rows: list[_Buffered]) -> pa.Table:
    """Buffered events as a table: the meta columns, then a column for every field any event has."""
    fields = [row[4] for row in rows]
    columns: dict[str, pa.Array] = {
        "entity_id": pa.array([row[1] for row in rows], pa.string()),
        "event_time": pa.array([row[2] for row in rows], pa.int64()).cast(_EVENT_TIME),
        "event_id": pa.array([row[3] for row in rows], pa.string()),
    }
    names: dict[str, None] = {}
    for f in fields:
        if f.keys() - names.keys():
            names.update(dict.fromkeys(f))
    for name in names:
        if name not in columns:
            columns[name] = _column([f.get(name) for f in fields])
    return pa.table(columns)


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
    """The stream's Parquet files whose date partition can hold events in ``[start, end)``; a stream that is
    not a valid name, or a path that would leave ``root``, is refused (InvalidArgument)."""
    out = []
    for part in sorted(safe_join(root, check_name(stream, "stream"), field="stream").glob("date=*")):
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
