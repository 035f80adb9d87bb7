"""Parquet files partitioned by date (``<root>/<kind>/date=YYYY-MM-DD/part-*.parquet``), written once and
never changed; reads drop repeated records (at-least-once delivery) and join outcomes to predictions."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlops.errors import InvalidArgument


class ArchiveStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._buffers: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def add(self, kind: str, row: dict[str, Any]) -> None:
        with self._lock:
            self._buffers[kind].append(row)

    def flush(self) -> int:
        with self._lock:
            buffers, self._buffers = self._buffers, defaultdict(list)
        written = 0
        for kind, rows in buffers.items():
            by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                by_day[row["time"].strftime("%Y-%m-%d")].append(row)
            for day, day_rows in by_day.items():
                directory = self.root / kind / f"date={day}"
                directory.mkdir(parents=True, exist_ok=True)
                name = f"part-{uuid.uuid4().hex}.parquet"
                tmp = directory / f".{name}.tmp"
                pq.write_table(pa.Table.from_pylist(day_rows), tmp)
                tmp.replace(directory / name)
                written += len(day_rows)
        return written

    def _read(self, kind: str, start: datetime | None, end: datetime | None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for path in sorted((self.root / kind).glob("date=*/part-*.parquet")):
            day = path.parent.name.removeprefix("date=")
            if start and day < start.strftime("%Y-%m-%d"):
                continue
            if end and day > end.strftime("%Y-%m-%d"):
                continue
            for row in pq.read_table(path).to_pylist():
                key = row["prediction_id"] + ":" + row.get("kind", kind)
                if key in seen:
                    continue
                seen.add(key)
                rows.append(row)
        return rows

    def query(self, prediction_id: str | None = None, model: str | None = None, version: str | None = None,
              start: datetime | None = None, end: datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if version and not model:
            raise InvalidArgument("a version needs its model", field="model")
        if start and end and end <= start:
            raise InvalidArgument("end must be after start", field="end")
        predictions = [
            r for r in self._read("predictions", start, end)
            if (not prediction_id or r["prediction_id"] == prediction_id)
            and (not model or r["model"] == model)
            and (not version or r["version"] == version)
            and (not start or r["time"] >= start)
            and (not end or r["time"] < end)
        ]
        predictions.sort(key=lambda r: r["time"], reverse=True)
        predictions = predictions[:limit]
        wanted = {r["prediction_id"] for r in predictions}
        outcomes: dict[str, dict[str, Any]] = defaultdict(dict)
        for o in self._read("outcomes", None, None):
            if o["prediction_id"] in wanted:
                value = o.get("value")
                outcomes[o["prediction_id"]][o["kind"]] = value
                outcomes[o["prediction_id"]][f"{o['kind']}_time"] = o["time"].isoformat()
        out = []
        for r in predictions:
            row = {**r, "time": r["time"].isoformat(), "feedback": outcomes.get(r["prediction_id"]) or None}
            out.append(row)
        return out


def now() -> datetime:
    return datetime.now(UTC)
