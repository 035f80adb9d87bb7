"""Parquet datasets to arrays: ordering, missing values, label checks, clear errors."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.trainer.dataset import DatasetError, from_parquet


def parquet(**columns: object) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def test_rows_are_ordered_by_event_time_and_nulls_kept_as_nan() -> None:
    data = parquet(
        entity_id=["e1", "e2", "e3"],
        event_time=pa.array([3, 1, 2], pa.timestamp("ms")),
        event_id=["c", "a", "b"],
        f1=[30.0, None, 20.0],
        f2=pa.array([3, 1, 2], pa.int64()),
        flag=[True, False, True],
        y=[1, 0, 2],
    )
    d = from_parquet(data, ["f1", "f2", "flag"], "y")
    assert d.x.dtype == np.float32 and d.y.dtype == np.int64
    assert np.isnan(d.x[0, 0]) and d.x[:, 1].tolist() == [1.0, 2.0, 3.0]
    assert d.y.tolist() == [0, 2, 1] and d.num_classes == 3 and d.rows == 3


def test_rows_without_label_are_dropped_and_single_class_still_has_two_outputs() -> None:
    d = from_parquet(parquet(f=[1.0, 2.0, 3.0], y=[0.0, None, 0.0]), ["f"], "y")
    assert d.rows == 2 and d.num_classes == 2


def test_numeric_strings_are_accepted() -> None:
    assert from_parquet(parquet(f=["1.5", "2"], y=[0, 1]), ["f"], "y").x[:, 0].tolist() == [1.5, 2.0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (parquet(f=pa.array([], pa.float64()), y=pa.array([], pa.int64())), "no rows"),
        (parquet(f=[1.0, 2.0], y=pa.array([None, None], pa.float64())), "no rows with a label"),
        (parquet(f=[1.0], y=[1]), "at least 2"),
        (parquet(f=[1.0, 2.0], y=[0.5, 1.0]), "class ids"),
        (parquet(f=[1.0, 2.0], y=[-1, 1]), "class ids"),
        (parquet(f=[1.0, 2.0], y=[0, 5000]), "limit"),
        (parquet(f=["a", "b"], y=[0, 1]), "not numeric"),
        (parquet(g=[1.0, 2.0], y=[0, 1]), "lacks column"),
        (b"", "empty"),
        (b"not parquet", "not readable"),
    ],
)
def test_unusable_datasets_say_why(data: bytes, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        from_parquet(data, ["f"], "y")
