"""The offline store: validated events appended as Parquet files partitioned by stream and date, and
versioned training sets built from it. Rows keep their event time, so a training row holds only what
was known when its event happened; repeated event_ids (at-least-once delivery) are dropped on read."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlops.errors import InvalidArgument, NotFound

META_COLUMNS = ("entity_id", "event_time", "event_id")


class OfflineWriter:
    """Buffers rows and writes them as one Parquet file per (stream, date) on :meth:`flush`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._rows: list[dict[str, Any]] = []

    def add(self, stream: str, row: dict[str, Any]) -> None:
        self._rows.append({"__stream": stream, **row})

    async def flush(self) -> int:
        if not self._rows:
            return 0
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in self._rows:
            stream = row.pop("__stream")
            groups[(stream, row["event_time"].strftime("%Y-%m-%d"))].append(row)
        for (stream, day), rows in groups.items():
            directory = self.root / stream / f"date={day}"
            directory.mkdir(parents=True, exist_ok=True)
            name = f"part-{uuid.uuid4().hex}.parquet"
            tmp = directory / f".{name}.tmp"
            pq.write_table(pa.Table.from_pylist(rows), tmp)
            tmp.replace(directory / name)
        written = len(self._rows)
        self._rows = []
        return written


def read_stream(root: Path, stream: str) -> list[dict[str, Any]]:
    """Every row of ``stream`` once (first copy of each event_id), ordered by event time."""
    files = sorted((root / stream).glob("date=*/part-*.parquet"))
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    for f in files:
        for row in pq.read_table(f).to_pylist():
            if row["event_id"] in seen:
                continue
            seen.add(row["event_id"])
            rows.append(row)
    rows.sort(key=lambda r: (r["event_time"], r["event_id"]))
    return rows


class DatasetStore:
    """Training sets, content-addressed: the same rows give the same id; a card describes each one."""

    def __init__(self, offline_root: Path, root: Path, definitions_digest: str) -> None:
        self.offline_root = offline_root
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.definitions_digest = definitions_digest

    def build(self, stream: str, features: list[str], label: str,
              start: datetime | None = None, end: datetime | None = None) -> dict[str, Any]:
        if not stream:
            raise InvalidArgument("stream is required", field="stream")
        if not features:
            raise InvalidArgument("at least one feature is required", field="features")
        if not label:
            raise InvalidArgument("label is required", field="label")
        rows = read_stream(self.offline_root, stream)
        if not rows:
            raise NotFound(f"the offline store has no events of stream {stream!r}", field="stream")
        columns = set().union(*(r.keys() for r in rows))
        for name in [*features, label]:
            if name not in columns:
                raise InvalidArgument(f"{name} is not a field of stream {stream!r}", field="features")
        selected = []
        for r in rows:
            t = r["event_time"]
            if (start and t < start) or (end and t >= end):
                continue
            if r.get(label) is None or any(r.get(f) is None for f in features):
                continue
            selected.append({**{c: r[c] for c in META_COLUMNS}, **{f: r[f] for f in features}, label: r[label]})
        if not selected:
            raise InvalidArgument("no rows with every feature and the label in that time range", field="label")
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(selected), buf)
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        dataset_id = f"ds-{sha[:16]}"
        card = {
            "id": dataset_id, "stream": stream, "features": features, "label": label, "rows": len(selected),
            "sha256": sha, "created_at": datetime.now(UTC).isoformat(),
            "definitions_hash": self.definitions_digest,
            "event_time_min": selected[0]["event_time"].isoformat(),
            "event_time_max": selected[-1]["event_time"].isoformat(),
        }
        path = self.root / f"{dataset_id}.parquet"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            (self.root / f"{dataset_id}.json").write_text(json.dumps(card, indent=2))
        return json.loads((self.root / f"{dataset_id}.json").read_text())

    def card(self, dataset_id: str) -> dict[str, Any]:
        path = self.root / f"{Path(dataset_id).name}.json"
        if not path.exists():
            raise NotFound(f"dataset {dataset_id!r} does not exist", field="id")
        return json.loads(path.read_text())

    def read(self, dataset_id: str) -> bytes:
        card = self.card(dataset_id)
        data = (self.root / f"{card['id']}.parquet").read_bytes()
        if hashlib.sha256(data).hexdigest() != card["sha256"]:
            raise InvalidArgument(f"dataset {dataset_id} is corrupt: its checksum does not match", field="id")
        return data
