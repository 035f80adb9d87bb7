"""Versioned training sets: point-in-time-correct rows, materialised once as Parquet under a content id.

A build takes *label rows* (the events of a stream that carry the label, or rows given inline) and, for
each row, every requested feature: a field of the label row itself, or a defined feature computed as of
the row's event time from the offline store (``pit.py``). The result's id is a hash of its content
(columns and rows, canonically serialised), so the same content always gets the same id and any change
gets another; the first build of an id writes the Parquet file and the dataset card, later builds of the
same content return that card. Cards say what is in the set and where it came from.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mlops.errors import InvalidArgument, NotFound
from mlops.names import check_name, is_name
from services.feature import offline
from services.feature.definitions import Definitions
from services.feature.pit import PointInTime

ID_PREFIX = "ds-"
FORMAT = "mlops-dataset-v1"


@dataclass
class DatasetSpec:
    stream: str
    features: list[str]
    label: str
    start: datetime | None = None
    end: datetime | None = None
    last_n: int = 0
    #: label rows given inline ({"entity_id", "event_time", <label>, ...}) instead of a stream's events
    rows: list[dict[str, Any]] | None = field(default=None, repr=False)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def content_hash(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """sha256 of the columns and rows, serialised canonically (independent of Parquet's bytes)."""
    h = hashlib.sha256()
    h.update(f"{FORMAT}\n{json.dumps(columns)}\n".encode())
    for row in rows:
        h.update(json.dumps([_iso(row.get(c)) for c in columns], separators=(",", ":"), default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def _column_stats(values: list[Any]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    stats: dict[str, Any] = {"count": len(present), "nulls": len(values) - len(present)}
    nums = [float(v) for v in present if isinstance(v, int | float) and not isinstance(v, bool)]
    if nums and len(nums) == len(present):
        finite = [x for x in nums if math.isfinite(x)]
        if finite:
            stats.update(mean=statistics.fmean(finite), std=statistics.pstdev(finite) if len(finite) > 1 else 0.0,
                         min=min(finite), max=max(finite))
    elif present and all(isinstance(v, datetime) for v in present):
        stats.update(min=min(present).isoformat(), max=max(present).isoformat())
    elif present:
        counts = Counter(json.dumps(v) if not isinstance(v, str) else v for v in present)
        stats.update(distinct=len(counts), top=dict(counts.most_common(10)))
    return stats


def _parse_time(value: Any, index: int) -> datetime:
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), tz=UTC)
        if isinstance(value, str):
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return t if t.tzinfo else t.replace(tzinfo=UTC)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):  # out of range: epoch 1e20, year 99999
        pass
    raise InvalidArgument(f"row {index}: event_time must be an ISO-8601 time or epoch seconds", field="rows")


def _inline_rows(rows: list[dict[str, Any]], label: str) -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or row.get("entity_id") in (None, ""):
            raise InvalidArgument(f"row {i}: every label row needs an entity_id", field="rows")
        out.append({**row, "entity_id": str(row["entity_id"]), "event_time": _parse_time(row.get("event_time"), i),
                    "event_id": str(row.get("event_id") or f"row-{i}")})
    return out


class DatasetStore:
    def __init__(self, offline_root: Path, root: Path, defs: Definitions) -> None:
        self.offline_root = offline_root
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.defs = defs

    # -- build -------------------------------------------------------------------------------------------
    def build(self, spec: DatasetSpec) -> dict[str, Any]:
        if not spec.features:
            raise InvalidArgument("at least one feature is required", field="features")
        if not spec.label:
            raise InvalidArgument("label is required", field="label")
        if spec.last_n < 0:
            raise InvalidArgument("last_n must be >= 0", field="last_n")
        if len(set(spec.features)) != len(spec.features) or spec.label in spec.features:
            raise InvalidArgument("features must be distinct and must not include the label", field="features")
        if spec.rows is not None:
            source = [r for r in _inline_rows(spec.rows, spec.label)
                      if not (spec.start and r["event_time"] < spec.start)
                      and not (spec.end and r["event_time"] >= spec.end)]
        else:
            if not spec.stream:
                raise InvalidArgument("stream is required (or label rows inline)", field="stream")
            check_name(spec.stream, "stream")
            source = offline.read_stream(self.offline_root, spec.stream, spec.start, spec.end)
            if not source:
                raise NotFound(f"the offline store has no events of stream {spec.stream!r} in that time range",
                               field="stream")
        labelled = [r for r in source if r.get(spec.label) is not None]
        if not labelled:
            raise InvalidArgument(f"no label rows with a {spec.label!r} value in that time range", field="label")
        labelled.sort(key=lambda r: (r["event_time"], r["event_id"]))
        if spec.last_n:
            labelled = labelled[-spec.last_n:]
        row_fields = set().union(*(r.keys() for r in labelled))
        own = [f for f in spec.features if f in row_fields]
        joined = [f for f in spec.features if f not in row_fields]
        pit = PointInTime(self.defs, self.offline_root)
        values, sources = pit.compute([(r["entity_id"], r["event_time"]) for r in labelled], joined)
        columns = [*offline.META_COLUMNS, *spec.features, spec.label]
        table_rows = []
        for r, v in zip(labelled, values, strict=True):
            row = {c: r[c] for c in offline.META_COLUMNS}
            for f in spec.features:
                row[f] = r.get(f) if f in own else v[f]
            row[spec.label] = r[spec.label]
            table_rows.append(row)
        digest = content_hash(columns, table_rows)
        dataset_id = ID_PREFIX + digest[:16]
        existing = self._card_path(dataset_id)
        if existing.exists():
            return json.loads(existing.read_text())
        buf = io.BytesIO()
        pq.write_table(offline.table(table_rows), buf)
        data = buf.getvalue()
        card = {
            "id": dataset_id,
            "stream": spec.stream or "inline",
            "features": spec.features,
            "label": spec.label,
            "rows": len(table_rows),
            "content_sha256": digest,
            "sha256": hashlib.sha256(data).hexdigest(),
            "created_at": datetime.now(UTC).isoformat(),
            "definitions_hash": self.defs.digest,
            "event_time_min": table_rows[0]["event_time"].isoformat(),
            "event_time_max": table_rows[-1]["event_time"].isoformat(),
            "entities": len({r["entity_id"] for r in table_rows}),
            "schema": [{"name": f.name, "type": str(f.type)} for f in pq.read_schema(io.BytesIO(data))],
            "stats": {c: _column_stats([r[c] for r in table_rows]) for c in columns if c != "event_id"},
            "request": {"start": _iso(spec.start), "end": _iso(spec.end), "last_n": spec.last_n},
            "sources": {
                "label_rows": {"kind": "inline", "rows": len(spec.rows)} if spec.rows is not None
                else {"kind": "stream", "stream": spec.stream},
                "features": {
                    **{f: {"kind": "label_row"} for f in own},
                    **{f: sources[f].describe() for f in joined},
                },
                "point_in_time": "each row sees only events with event_time <= its own event_time",
                "offline_files_read": pit.files_read + (0 if spec.rows is not None else
                                                        len(offline.files(self.offline_root, spec.stream,
                                                                          spec.start, spec.end))),
            },
        }
        self._write(self.root / f"{dataset_id}.parquet", data)
        self._write(existing, json.dumps(card, indent=2).encode())
        return card

    # -- read --------------------------------------------------------------------------------------------
    def _card_path(self, dataset_id: str) -> Path:
        return self.root / f"{Path(dataset_id).name}.json"

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def card(self, dataset_id: str) -> dict[str, Any]:
        if not is_name(dataset_id) or not dataset_id.startswith(ID_PREFIX):
            raise NotFound(f"dataset {dataset_id[:80]!r} does not exist", field="id")
        path = self._card_path(dataset_id)
        if not path.exists():
            raise NotFound(f"dataset {dataset_id!r} does not exist", field="id")
        return json.loads(path.read_text())

    def list(self) -> list[dict[str, Any]]:
        """Every dataset's card without the per-column details, newest first."""
        cards = []
        for path in self.root.glob(f"{ID_PREFIX}*.json"):
            card = json.loads(path.read_text())
            cards.append({k: card.get(k) for k in ("id", "stream", "features", "label", "rows", "created_at",
                                                    "event_time_min", "event_time_max", "definitions_hash")})
        return sorted(cards, key=lambda c: c["created_at"] or "", reverse=True)

    def read(self, dataset_id: str) -> bytes:
        card = self.card(dataset_id)
        data = (self.root / f"{card['id']}.parquet").read_bytes()
        if hashlib.sha256(data).hexdigest() != card["sha256"]:
            raise InvalidArgument(f"dataset {dataset_id} is corrupt: its checksum does not match", field="id")
        return data
