"""Training sets on the real stack: point-in-time joins that a naive latest-value join would get wrong,
content-addressed dataset versions, ``last_n``, over REST, gRPC and the CLI."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pyarrow.parquet as pq
import pytest
from google.protobuf import timestamp_pb2

from mlops.grpc_util import channel
from mlops.v1 import feature_pb2, feature_pb2_grpc
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


async def _schema(http: httpx.AsyncClient, stack: Stack, stream: str, fields: list[dict[str, Any]]) -> None:
    r = await http.put(stack.url("ingest", f"/v1/streams/{stream}/schema"), json={"fields": fields})
    assert r.status_code == 200, r.text


async def _send(http: httpx.AsyncClient, stack: Stack, stream: str, events: list[dict[str, Any]]) -> None:
    body = [{**e, "event_time": e["event_time"].isoformat()} for e in events]
    r = await http.post(stack.url("ingest", f"/v1/streams/{stream}/events"), json=body)
    assert r.status_code == 202 and r.json()["accepted"] == len(events), r.text


async def _build(http: httpx.AsyncClient, stack: Stack, want_rows: int, **body: Any) -> dict[str, Any]:
    """Build once the offline store has caught up (its Parquet files are written about every second)."""
    last: httpx.Response | None = None
    for _ in range(120):
        last = await http.post(stack.url("feature", "/v1/datasets"), json=body)
        if last.status_code == 201 and last.json()["rows"] == want_rows:
            return last.json()
        await asyncio.sleep(0.5)
    raise AssertionError(f"dataset never had {want_rows} rows: {last.status_code if last else None} "
                         f"{last.text if last else ''}")


def _rows(data: bytes) -> list[dict[str, Any]]:
    return pq.read_table(io.BytesIO(data)).to_pylist()


async def test_point_in_time_join_never_sees_the_future(stack: Stack) -> None:
    """Payments come from one stream, outcomes (labels) from another. Each training row must hold the
    features as they were at the label's own time; joining the latest values would leak the future."""
    run = uuid.uuid4().hex[:8]
    payments, outcomes = f"payments-{run}", f"outcomes-{run}"
    alice, bob = f"{run}-alice", f"{run}-bob"
    async with httpx.AsyncClient(timeout=60) as http:
        await _schema(http, stack, payments, [{"name": "amount", "type": "float"},
                                              {"name": "merchant", "type": "string"}])
        await _schema(http, stack, outcomes, [{"name": "defaulted", "type": "int"}])
        pay = [  # (entity, minute, amount, merchant)
            (alice, 0, 10.0, "m1"), (alice, 20, 30.0, "m2"), (alice, 50, 500.0, "m3"), (alice, 130, 7.0, "m1"),
            (bob, 5, 100.0, "m9"), (bob, 100, 1.0, "m8"),
        ]
        await _send(http, stack, payments, [
            {"event_id": f"{run}-p{i}", "entity_id": e, "event_time": at(m), "amount": a, "merchant": mc}
            for i, (e, m, a, mc) in enumerate(pay)])
        labels = [(alice, 25, 0), (alice, 55, 1), (alice, 200, 0), (bob, 50, 1), (bob, 101, 0), (bob, -10, 1)]
        await _send(http, stack, outcomes, [
            {"event_id": f"{run}-l{i}", "entity_id": e, "event_time": at(m), "defaulted": y}
            for i, (e, m, y) in enumerate(labels)])

        features = ["amount", "merchant", "amount_sum_1h", "payments_1h", "amount_total", "merchants", "event_count"]
        card = await _build(http, stack, len(labels), stream=outcomes, features=features, label="defaulted")
        data = (await http.get(stack.url("feature", f"/v1/datasets/{card['id']}/data"))).content
        rows = _rows(data)

    got = {(r["entity_id"], r["event_time"]): r for r in rows}
    assert [r["event_time"] for r in rows] == sorted(r["event_time"] for r in rows)

    def row(entity: str, minute: float) -> dict[str, Any]:
        return got[(entity, at(minute))]

    # alice at minute 25 saw the payments at 0 and 20 only (a latest-value join would give 7.0 and "m1")
    r = row(alice, 25)
    assert (r["amount"], r["merchant"], r["amount_total"], r["merchants"]) == (30.0, "m2", 40.0, 2)
    # the 1 h sliding window (10 min steps) at 09:25 covers buckets 08:30 .. 09:29: both payments;
    # the 1 h tumbling window is the hour 09:00-10:00 up to 09:25
    assert (r["amount_sum_1h"], r["payments_1h"]) == (40.0, 2)
    # the label stream's own events count in the default view's event_count (as of the row: <= its time)
    assert r["event_count"] == 3  # two payments and the outcome itself
    r = row(alice, 55)
    assert (r["amount"], r["amount_total"], r["amount_sum_1h"], r["merchants"]) == (500.0, 540.0, 540.0, 3)
    r = row(alice, 200)  # 12:20: the sliding window covers 11:30..12:29, which holds no payment
    assert (r["amount"], r["amount_total"], r["amount_sum_1h"], r["payments_1h"]) == (7.0, 547.0, 0.0, 0)
    assert row(bob, 50)["amount"] == 100.0 and row(bob, 101)["amount"] == 1.0  # the payment at 100 is <= 101
    r = row(bob, -10)  # before any payment: nothing to join
    assert (r["amount"], r["amount_total"], r["amount_sum_1h"]) == (None, None, None)

    naive_latest = {alice: 7.0, bob: 1.0}
    assert any(r["amount"] != naive_latest[r["entity_id"]] for r in rows), "the test must be able to catch a leak"
    assert card["sources"]["features"]["amount_sum_1h"]["kind"] == "aggregation"
    assert payments in card["sources"]["features"]["amount"]["streams"]
    assert outcomes not in card["sources"]["features"]["amount"]["streams"]  # it never carried an amount
    assert card["stats"]["defaulted"]["count"] == len(labels)
    assert card["event_time_min"] == at(-10).isoformat() and card["rows"] == len(labels)


async def test_dataset_versions_are_content_addressed_and_last_n_keeps_the_newest(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    stream = f"loans-{run}"
    async with httpx.AsyncClient(timeout=60) as http:
        await _schema(http, stack, stream, [{"name": "income", "type": "float"}, {"name": "approved", "type": "int"}])
        events = [{"event_id": f"{run}-{i}", "entity_id": f"{run}-u{i % 7}", "event_time": at(i),
                   "income": float(i * 10), "approved": i % 2} for i in range(40)]
        await _send(http, stack, stream, events[::-1])  # arrival order must not matter
        spec = {"stream": stream, "features": ["income"], "label": "approved"}
        first = await _build(http, stack, 40, **spec)
        again = await _build(http, stack, 40, **spec)
        assert first["id"] == again["id"] and first["id"].startswith("ds-")
        assert first["created_at"] == again["created_at"], "the same content is the same version"

        recent = await _build(http, stack, 10, **spec, last_n=10)
        assert recent["id"] != first["id"]
        assert recent["event_time_min"] == at(30).isoformat() and recent["event_time_max"] == at(39).isoformat()
        rows = _rows((await http.get(stack.url("feature", f"/v1/datasets/{recent['id']}/data"))).content)
        assert [r["income"] for r in rows] == [float(i * 10) for i in range(30, 40)]

        # a new event changes the content, so the version
        await _send(http, stack, stream, [{"event_id": f"{run}-new", "entity_id": f"{run}-u0", "event_time": at(45),
                                           "income": 1.0, "approved": 1}])
        newer = await _build(http, stack, 41, **spec)
        assert newer["id"] != first["id"]
        # but a time range that excludes it gives back the first version
        same = await _build(http, stack, 40, **spec, end=at(41).isoformat())
        assert same["id"] == first["id"]

        listed = (await http.get(stack.url("feature", "/v1/datasets"))).json()["datasets"]
        assert {first["id"], recent["id"], newer["id"]} <= {d["id"] for d in listed}
        card = (await http.get(stack.url("feature", f"/v1/datasets/{first['id']}"))).json()
        assert card["schema"] and card["stats"]["income"]["max"] == 390.0 and card["definitions_hash"]
        r = await http.get(stack.url("feature", "/v1/datasets/ds-0000000000000000"))
        assert r.status_code == 404 and r.json()["error"]["field"] == "id"
        r = await http.post(stack.url("feature", "/v1/datasets"), json={**spec, "features": ["nope"]})
        assert r.status_code == 400 and r.json()["error"]["field"] == "features"

    # gRPC: BuildDataset with last_n (what the trainer calls for retraining), GetDataset, ReadDataset
    async with channel(stack.grpc("feature")) as ch:
        stub = feature_pb2_grpc.FeatureServiceStub(ch)
        end = timestamp_pb2.Timestamp()
        end.FromDatetime(at(41))  # before the newest event, so the same content as `recent` and `first`
        version = await stub.BuildDataset(feature_pb2.BuildDatasetRequest(
            stream=stream, features=["income"], label="approved", last_n=10, end=end))
        assert version.id == recent["id"] and version.rows == 10 and version.definitions_hash
        version = await stub.BuildDataset(feature_pb2.BuildDatasetRequest(
            stream=stream, features=["income"], label="approved", end=end))
        assert version.id == first["id"]
        version = await stub.BuildDataset(feature_pb2.BuildDatasetRequest(
            stream=stream, features=["income"], label="approved", last_n=10))
        assert version.rows == 10 and version.id not in (recent["id"], first["id"], newer["id"])
        assert (await stub.GetDataset(feature_pb2.GetDatasetRequest(id=first["id"]))).sha256 == first["sha256"]
        data = b"".join([c.data async for c in stub.ReadDataset(feature_pb2.GetDatasetRequest(id=first["id"]))])
        assert len(_rows(data)) == 40
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetDataset(feature_pb2.GetDatasetRequest(id="ds-nope"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_label_rows_from_a_file_through_the_cli(stack: Stack, tmp_path: Path) -> None:
    """``mlops datasets build --rows-file``: entity rows with timestamps and labels from a CSV file, joined
    to the stream's features as of each row; then ``show`` and ``list``."""
    run = uuid.uuid4().hex[:8]
    stream = f"payments-{run}"
    async with httpx.AsyncClient(timeout=60) as http:
        await _schema(http, stack, stream, [{"name": "amount", "type": "float"}, {"name": "flag", "type": "int"}])
        await _send(http, stack, stream, [{"event_id": f"{run}-{i}", "entity_id": f"{run}-a", "event_time": at(i * 10),
                                           "amount": float(i + 1), "flag": 1} for i in range(6)])
        await _build(http, stack, 6, stream=stream, features=["amount"], label="flag")  # the offline store caught up
    rows = tmp_path / "labels.csv"
    rows.write_text("entity_id,event_time,churned\n"
                    f"{run}-a,{at(15).isoformat()},0\n{run}-a,{at(55).isoformat()},1\n{run}-b,{at(30).isoformat()},0\n")
    out = await asyncio.to_thread(stack.mlops, "datasets", "build", "--rows-file", str(rows),
                                  "--features", "amount,amount_total", "--label", "churned")
    card = json.loads(out.stdout)
    assert card["rows"] == 3 and card["sources"]["label_rows"] == {"kind": "inline", "rows": 3}
    async with httpx.AsyncClient(timeout=60) as http:
        data = (await http.get(stack.url("feature", f"/v1/datasets/{card['id']}/data"))).content
    got = [(r["entity_id"], r["amount"], r["amount_total"], r["churned"]) for r in _rows(data)]
    assert got == [(f"{run}-a", 2.0, 3.0, 0), (f"{run}-b", None, None, 0), (f"{run}-a", 6.0, 21.0, 1)]
    shown = json.loads((await asyncio.to_thread(stack.mlops, "datasets", "show", card["id"])).stdout)
    assert shown["id"] == card["id"] and shown["stats"]["amount_total"]["max"] == 21.0
    listed = json.loads((await asyncio.to_thread(stack.mlops, "datasets", "list", "--json")).stdout)
    assert card["id"] in {d["id"] for d in listed}
