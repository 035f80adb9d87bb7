"""From a feature-service dataset (Parquet bytes) to arrays a classifier can learn from.

Rows are put in (event_time, event_id) order, so the same dataset gives the same arrays whatever order
its file lists them in. Missing feature values become NaN (the model maps them to the training mean);
rows without a label are dropped. Labels must be class ids 0..C-1. A declared sensitive attribute is
kept beside the features (as strings, for the fairness gate), never fed to the model.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


class DatasetError(Exception):
    """A dataset the trainer cannot learn from; the message says why, for the job's error."""


@dataclass(slots=True)
class TrainingData:
    x: np.ndarray  # float32 [N, F], NaN where missing, columns in ``features`` order
    y: np.ndarray  # int64 [N], class ids
    features: list[str]
    num_classes: int
    groups: np.ndarray | None = None  # object [N], the sensitive attribute's value per row (as text)

    @property
    def rows(self) -> int:
        return int(self.y.shape[0])


def _numeric(table: pa.Table, column: str, role: str) -> np.ndarray:
    col = table.column(column)
    if pa.types.is_boolean(col.type) or pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        values = pc.cast(col, pa.float64())
    elif pa.types.is_null(col.type):
        values = pa.chunked_array([pa.nulls(len(col), pa.float64())])
    else:
        try:
            values = pc.cast(col, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DatasetError(f"{role} {column!r} is not numeric (type {col.type})") from exc
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def _groups(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).to_pylist()
    return np.array(["<missing>" if v is None else _group_name(v) for v in values], dtype=object)


def _group_name(value: object) -> str:
    # 1 and 1.0 are one group (integers often come back as floats from the offline store).
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def from_table(
    table: pa.Table, features: list[str], label: str, max_classes: int = 1000, group_column: str = ""
) -> TrainingData:
    missing = [c for c in [*features, label, *([group_column] if group_column else [])]
               if c not in table.column_names]
    if missing:
        raise DatasetError(f"dataset lacks column(s) {', '.join(missing)}")
    order = [(c, "ascending") for c in ("event_time", "event_id", "entity_id") if c in table.column_names]
    if order and table.num_rows:
        table = table.take(pc.sort_indices(table, sort_keys=order))
    y = _numeric(table, label, "label")
    x = (
        np.stack([_numeric(table, f, "feature") for f in features], axis=1)
        if table.num_rows
        else np.zeros((0, len(features)))
    )
    keep = ~np.isnan(y)
    x, y = x[keep], y[keep]
    groups = _groups(table, group_column)[keep] if group_column and table.num_rows else None
    if table.num_rows == 0:
        raise DatasetError("dataset has no rows")
    if y.size == 0:
        raise DatasetError(f"dataset has no rows with a label {label!r}")
    if y.size < 2:
        raise DatasetError("dataset needs at least 2 labelled rows")
    if not np.all(np.isfinite(y)) or np.any(y < 0) or np.any(y != np.round(y)):
        raise DatasetError(f"label {label!r} must hold class ids 0..C-1 (non-negative integers)")
    num_classes = max(int(y.max()) + 1, 2)
    if num_classes > max_classes:
        raise DatasetError(f"label {label!r} has class id {int(y.max())}, over the limit of {max_classes - 1}")
    return TrainingData(x=x.astype(np.float32), y=y.astype(np.int64), features=list(features), num_classes=num_classes,
                        groups=groups)


def from_parquet(
    data: bytes, features: list[str], label: str, max_classes: int = 1000, group_column: str = ""
) -> TrainingData:
    if not data:
        raise DatasetError("dataset is empty (no Parquet bytes)")
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetError(f"dataset is not readable Parquet: {exc}") from exc
    return from_table(table, features, label, max_classes, group_column)
