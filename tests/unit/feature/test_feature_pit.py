"""Point-in-time values from the offline store (real Parquet files in a temp dir): the rule that a row
sees only events at or before its own time, windows, TTL, sources, and the dataset builder on top."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from mlops.errors import InvalidArgument, NotFound
from services.feature.datasets import DatasetSpec, DatasetStore, content_hash
from services.feature.definitions import Definitions
from services.feature.offline import OfflineWriter, read_stream
from services.feature.pit import PointInTime

DEFS = Definitions.parse("""
views:
  - name: default
    stream: "*"
    passthrough: "*"
    ttl_s: 1d
    aggregations:
      - {name: event_count, fn: count}
  - name: pay
    stream: "pay*"
    passthrough: []
    ttl_s: 2h
    aggregations:
      - {name: total, fn: sum, field: amount}
      - {name: sum_1h, fn: sum, field: amount, window: {kind: sliding, size_s: 1h, step_s: 10m}}
      - {name: n_hour, fn: count, window: {kind: tumbling, size_s: 1h}}
      - {name: top, fn: max, field: amount}
      - {name: avg, fn: mean, field: amount}
      - {name: shops, fn: distinct_count, field: shop}
      - {name: last_shop, fn: last, field: shop}
      - {name: low_1h, fn: min, field: amount, window: {kind: sliding, size_s: 1h, step_s: 10m}}
""")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _write(root: Path, stream: str, rows: list[dict[str, Any]]) -> None:
    writer = OfflineWriter(root)
    for i, row in enumerate(rows):
        writer.add(stream, {"event_id": f"{stream}-{i}", **row})
    asyncio.run(writer.flush())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "offline"
    _write(root, "payments", [
        {"entity_id": "a", "event_time": at(0), "amount": 10.0, "shop": "s1"},
        {"entity_id": "a", "event_time": at(20), "amount": 30.0, "shop": "s2"},
        {"entity_id": "a", "event_time": at(50), "amount": 500.0, "shop": "s1"},
        {"entity_id": "a", "event_time": at(130), "amount": 7.0, "shop": "s3"},
        {"entity_id": "b", "event_time": at(5), "amount": 100.0},
    ])
    _write(root, "outcomes", [
        {"entity_id": "a", "event_time": at(25), "label": 0},
        {"entity_id": "a", "event_time": at(55), "label": 1},
        {"entity_id": "a", "event_time": at(200), "label": 0},
        {"entity_id": "b", "event_time": at(-10), "label": 1},
        {"entity_id": "b", "event_time": at(500), "label": 0},
    ])
    return root


def _values(root: Path, rows: list[tuple[str, datetime]], names: list[str]) -> list[dict[str, Any]]:
    values, _ = PointInTime(DEFS, root).compute(rows, names)
    return values


def test_a_row_sees_only_the_past(store: Path) -> None:
    names = ["amount", "shop", "total", "sum_1h", "n_hour", "top", "avg", "shops", "last_shop", "low_1h",
             "event_count"]
    got = _values(store, [("a", at(25)), ("a", at(50)), ("a", at(55)), ("a", at(200))], names)
    assert got[0] == {"amount": 30.0, "shop": "s2", "total": 40.0, "sum_1h": 40.0, "n_hour": 2, "top": 30.0,
                      "avg": 20.0, "shops": 2, "last_shop": "s2", "low_1h": 10.0, "event_count": 3}
    assert got[1]["amount"] == 500.0 and got[1]["total"] == 540.0  # an event at the row's own time counts
    assert got[1]["event_count"] == 4  # default applies to every stream: 3 payments and the outcome at 09:25
    # 12:20: the sliding hour (11:30..12:29) holds no payment; the tumbling hour 12:00.. none either
    assert got[3]["sum_1h"] == 0 and got[3]["n_hour"] == 0 and got[3]["low_1h"] is None
    assert got[3]["amount"] == 7.0 and got[3]["total"] == 547.0 and got[3]["shops"] == 3


def test_windows_move_with_the_row_time(store: Path) -> None:
    # 10:10: the sliding window is 09:20..10:19 (buckets of 10 min), so the payment at 09:00 has left it
    got = _values(store, [("a", at(70)), ("a", at(79)), ("a", at(80))], ["sum_1h", "n_hour", "low_1h"])
    assert [g["sum_1h"] for g in got] == [530.0, 530.0, 500.0]  # at 10:20 the bucket 09:20 left too
    assert [g["n_hour"] for g in got] == [0, 0, 0]  # the tumbling hour 10:00-11:00 has no payment before 10:20
    assert got[0]["low_1h"] == 30.0


def test_ttl_and_never_seen(store: Path) -> None:
    got = _values(store, [("b", at(-10)), ("b", at(60)), ("b", at(500)), ("zed", at(60))],
                  ["amount", "total", "event_count"])
    assert got[0] == {"amount": None, "total": None, "event_count": 1}  # before any payment
    assert got[1] == {"amount": 100.0, "total": 100.0, "event_count": 2}
    # 17:20 is more than 2 h (pay's TTL) after b's payment at 09:05, less than 1 d (default's)
    assert got[2] == {"amount": 100.0, "total": None, "event_count": 3}
    assert got[3] == {"amount": None, "total": None, "event_count": None}


def test_sources_and_unknown_names(store: Path) -> None:
    _, sources = PointInTime(DEFS, store).compute([("a", at(60))], ["amount", "total", "default:shop"])
    assert sources["amount"].kind == "passthrough" and sources["amount"].streams == ["payments"]
    assert sources["total"].kind == "aggregation" and sources["total"].streams == ["payments"]
    with pytest.raises(InvalidArgument):
        PointInTime(DEFS, store).compute([("a", at(60))], ["pay:shop"])  # pay passes nothing through
    with pytest.raises(InvalidArgument):
        PointInTime(DEFS, store).compute([("a", at(60))], ["colour"])
    with pytest.raises(InvalidArgument):
        PointInTime(DEFS, store).compute([("a", at(60))], ["nope:amount"])


def test_offline_rows_keep_every_column_and_drop_repeats(tmp_path: Path) -> None:
    root = tmp_path / "offline"
    rows = [{"entity_id": "a", "event_time": at(1), "event_id": "1", "x": 1.0},
            {"entity_id": "a", "event_time": at(0), "event_id": "2", "x": 2.0, "y": "only here"}]
    _write(root, "s", [{k: v for k, v in r.items() if k != "event_id"} for r in rows])
    _write(root, "s", [{k: v for k, v in r.items() if k != "event_id"} for r in rows])  # written twice
    got = read_stream(root, "s")
    assert [(r["event_id"], r["x"], r.get("y")) for r in got] == [("s-1", 2.0, "only here"), ("s-0", 1.0, None)]
    assert read_stream(root, "s", start=at(0.5)) == [got[1]]
    assert read_stream(root, "s", entities={"b"}) == []
    assert len(list((root / "s").glob("date=2026-03-02/part-*.parquet"))) == 2


def _rows(data: bytes) -> list[dict[str, Any]]:
    return pq.read_table(io.BytesIO(data)).to_pylist()


def test_datasets_point_in_time_and_content_ids(store: Path, tmp_path: Path) -> None:
    ds = DatasetStore(store, tmp_path / "datasets", DEFS)
    spec = DatasetSpec(stream="outcomes", features=["amount", "sum_1h"], label="label")
    card = ds.build(spec)
    rows = _rows(ds.read(card["id"]))
    # b at 17:20: amount (default view, TTL 1 d) still there, sum_1h (pay view, TTL 2 h) stale
    assert [(r["entity_id"], r["amount"], r["sum_1h"], r["label"]) for r in rows] == [
        ("b", None, None, 1), ("a", 30.0, 40.0, 0), ("a", 500.0, 540.0, 1), ("a", 7.0, 0, 0), ("b", 100.0, None, 0)]
    assert ds.build(spec)["id"] == card["id"] and ds.build(spec)["created_at"] == card["created_at"]
    last2 = ds.build(DatasetSpec(stream="outcomes", features=["amount", "sum_1h"], label="label", last_n=2))
    assert last2["id"] != card["id"] and last2["rows"] == 2 and last2["event_time_min"] == at(200).isoformat()
    windowed = ds.build(DatasetSpec(stream="outcomes", features=["amount"], label="label", start=at(0), end=at(100)))
    assert windowed["rows"] == 2
    assert card["sources"]["features"]["sum_1h"]["kind"] == "aggregation"
    assert card["stats"]["label"] == {"count": 5, "nulls": 0, "mean": 0.4, "std": pytest.approx(0.4899, 1e-3),
                                      "min": 0.0, "max": 1.0}
    assert card["stats"]["amount"]["nulls"] == 1
    assert {c["id"] for c in ds.list()} == {card["id"], last2["id"], windowed["id"]}
    inline = ds.build(DatasetSpec(stream="", features=["total"], label="y", rows=[
        {"entity_id": "a", "event_time": at(30).isoformat(), "y": 1}, {"entity_id": "a", "event_time": 0, "y": 0}]))
    assert [(r["total"], r["y"]) for r in _rows(ds.read(inline["id"]))] == [(None, 0), (40.0, 1)]
    with pytest.raises(NotFound):
        ds.card("ds-missing")
    with pytest.raises(InvalidArgument):
        ds.build(DatasetSpec(stream="outcomes", features=["label"], label="label"))
    with pytest.raises(NotFound):
        ds.build(DatasetSpec(stream="nothing", features=["x"], label="y"))
    (ds.root / f"{card['id']}.parquet").write_bytes(b"tampered")
    with pytest.raises(InvalidArgument, match="corrupt"):
        ds.read(card["id"])


def test_content_hash_is_canonical() -> None:
    rows = [{"entity_id": "a", "event_time": at(0), "x": 1.0}, {"entity_id": "b", "event_time": at(1), "x": None}]
    h = content_hash(["entity_id", "event_time", "x"], rows)
    assert h == content_hash(["entity_id", "event_time", "x"], [dict(reversed(list(r.items()))) for r in rows])
    assert h != content_hash(["entity_id", "event_time", "x"], rows[::-1])
    assert h != content_hash(["entity_id", "event_time", "x"], [rows[0], {**rows[1], "x": 0.0}])
    assert h != content_hash(["entity_id", "event_time", "y"], rows)
