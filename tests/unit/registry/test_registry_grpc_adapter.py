"""The gRPC adapter's conversions: RunInfo's real fields, the run-binding tag, reference and key."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from mlops.auth.guard import current_principal
from mlops.auth.tokens import Principal
from mlops.v1 import registry_pb2
from services.registry.actor import who
from services.registry.grpc_api import DEFINITIONS_HASH_TAG, RUN_ID_TAG, register_from_proto, version_to_proto
from services.registry.views import Signature, VersionView


def test_register_request_maps_every_run_field() -> None:
    when = Timestamp()
    when.FromDatetime(datetime(2025, 1, 2, tzinfo=UTC))
    req = registry_pb2.RegisterModelVersionRequest(
        model="m",
        run=registry_pb2.RunInfo(
            experiment="m", params={"p": "1"}, metrics={"accuracy": 0.9},
            tags={"t": "x", RUN_ID_TAG: "run-9", DEFINITIONS_HASH_TAG: "defs"},
            dataset_id="ds", git_commit="abc", git_dirty=True, diff_sha256="d" * 64, python_version="CPython 3.11",
            pip_freeze="torch==2.13.0", seed=4, hardware="cpu",
            history=[registry_pb2.MetricPoint(key="loss", value=0.5, step=3, time=when),
                     registry_pb2.MetricPoint(key="loss", value=0.4, step=4)],
        ),
        artifact=b"a", signature=registry_pb2.ModelSignature(features=["f"]), reference=b"{}", idempotency_key="k",
    )
    got = register_from_proto(req, actor="trainer")
    assert got.run_id == "run-9" and got.run.tags == {"t": "x"} and got.run.definitions_hash == "defs"
    assert (got.run.diff_sha256, got.run.pip_freeze, got.run.seed) == ("d" * 64, "torch==2.13.0", 4)
    assert [(p.key, p.value, p.step) for p in got.run.history] == [("loss", 0.5, 3), ("loss", 0.4, 4)]
    assert got.run.history[0].time == datetime(2025, 1, 2, tzinfo=UTC) and got.run.history[1].time is None
    assert (got.reference, got.idempotency_key, got.actor) == (b"{}", "k", "trainer")


def test_version_carries_its_reference_hash() -> None:
    now = datetime.now(UTC)
    view = VersionView("m", "1", "r", "candidate", "a" * 64, "torchscript", 1, Signature(["f"]), now, now,
                       dataset_id="ds", reference_sha256="b" * 64)
    msg = version_to_proto(view)
    assert (msg.reference_sha256, msg.dataset_id, list(msg.signature.features)) == ("b" * 64, "ds", ["f"])


def test_the_actor_is_the_authenticated_caller_when_there_is_one() -> None:
    assert who("alice", "rest") == "alice" and who(None, "rest") == "rest"
    token = current_principal.set(Principal(token_id="t1", name="svc", role="admin"))
    try:
        assert who("bandit-router", "grpc") == "svc (bandit-router)" and who("", "grpc") == "svc"
    finally:
        current_principal.reset(token)
