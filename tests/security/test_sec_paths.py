"""Path traversal through the names callers choose. A Parquet file that looks like an offline-store stream
is planted next to the offline store (as another tenant's data, or a copied export, would lie); training
sets, training jobs and schemas are asked for streams that climb out of their stores or name absolute
paths. Every one is bad input (400 / INVALID_ARGUMENT), nothing is read or written outside, and the
planted rows never come back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops.v1 import feature_pb2, feature_pb2_grpc, ingest_pb2, ingest_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from tests.security import support
from tests.security.conftest import SecureStack

MARKER = "planted-outside-the-store"


@pytest.fixture(scope="module")
def loot(secure: SecureStack) -> Path:
    """``$MLOPS_HOME/loot``: laid out as a stream of the offline store (``$MLOPS_HOME/offline``), outside it."""
    root = secure.home / "loot"
    part = root / f"date={datetime.now(UTC).date().isoformat()}"
    part.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    table = pa.table({
        "entity_id": [f"{MARKER}-{i}" for i in range(20)],
        "event_time": pa.array([now] * 20, pa.timestamp("us", tz="UTC")),
        "event_id": [f"{MARKER}-e{i}" for i in range(20)],
        "x": [float(i) for i in range(20)],
        "y": [i % 2 for i in range(20)],
    })
    pq.write_table(table, part / "part-planted.parquet")
    return root


def _streams(loot: Path) -> list[str]:
    return ["../loot", "../../loot", "offline/../../loot", "a/../../loot", str(loot), "/etc", "/", "..", ".",
            "../" * 12 + "etc", "loot/", "\\..\\loot", ".hidden", "-rf"]


def test_a_training_set_never_reads_outside_the_offline_store(secure: SecureStack, loot: Path) -> None:
    with secure.http("scientist") as http:
        for stream in _streams(loot):
            r = http.post(secure.url("feature", "/v1/datasets"),
                          json={"stream": stream, "features": ["x"], "label": "y"})
            assert r.status_code == 400, (stream, r.status_code, r.text)
            assert MARKER not in r.text
            assert r.json()["error"]["field"] == "stream", r.text
        listed = http.get(secure.url("feature", "/v1/datasets"))
        assert listed.status_code == 200 and MARKER not in listed.text
        for dataset_id in ("..", "../loot", "ds-../../loot", "%2E%2E"):
            r = http.get(secure.url("feature", f"/v1/datasets/{dataset_id}/data"))
            assert r.status_code in (400, 404), (dataset_id, r.status_code)
    with grpc.insecure_channel(secure.grpc("feature")) as channel:
        stub = feature_pb2_grpc.FeatureServiceStub(channel)
        for stream in _streams(loot):
            code, details = support.refused_code(lambda: stub.BuildDataset(
                feature_pb2.BuildDatasetRequest(stream=stream, features=["x"], label="y"),  # noqa: B023
                metadata=support.metadata(secure, "scientist"), timeout=30))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (stream, code, details)


def test_a_training_job_refuses_a_stream_outside_the_store(secure: SecureStack, loot: Path) -> None:
    with secure.http("scientist") as http:
        for stream in _streams(loot):
            r = http.post(secure.url("trainer", "/v1/training-jobs"),
                          json={"model": "traversal", "stream": stream, "features": ["x"], "label": "y"})
            assert r.status_code == 400, (stream, r.status_code, r.text)
    with grpc.insecure_channel(secure.grpc("trainer")) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        for stream in _streams(loot):
            code, details = support.refused_code(lambda: stub.SubmitJob(
                trainer_pb2.TrainingJobSpec(model="traversal", stream=stream, features=["x"], label="y"),  # noqa: B023
                metadata=support.metadata(secure, "scientist"), timeout=30))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (stream, code, details)


def test_a_schema_is_never_written_or_read_outside_its_store(secure: SecureStack, loot: Path) -> None:
    secure.token("scientist")  # minted first: the tokens file must not change below
    tokens = secure.home / "auth" / "tokens.json"
    before = tokens.read_bytes()
    fields = [ingest_pb2.FieldSpec(name="x", type="float")]
    climbing = [*_streams(loot), "../auth/tokens", "../../auth/tokens", str(secure.home / "auth" / "tokens")]
    with grpc.insecure_channel(secure.grpc("ingest")) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        for stream in climbing:
            code, details = support.refused_code(lambda: stub.PutSchema(
                ingest_pb2.StreamSchema(stream=stream, fields=fields),  # noqa: B023
                metadata=support.metadata(secure, "scientist"), timeout=30))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (stream, code, details)
            code, details = support.refused_code(lambda: stub.GetSchema(
                ingest_pb2.GetSchemaRequest(stream=stream), metadata=support.metadata(secure, "scientist"),  # noqa: B023
                timeout=30))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (stream, code, details)
    with secure.http("admin") as http:  # admin: past every permission check, so only the name check is left
        for stream in ("..%2F..%2Fauth%2Ftokens", "%2E%2E", "..%5C..%5Cauth%5Ctokens"):
            r = http.put(secure.url("ingest", f"/v1/streams/{stream}/schema"), json={"fields": []})
            assert r.status_code in (400, 404), (stream, r.status_code, r.text)  # 404: no route has a '/' in it
    assert tokens.read_bytes() == before, "a schema write reached the tokens file"
    assert not (secure.home / "loot.json").exists() and not (secure.home / "auth" / "tokens.json.json").exists()
