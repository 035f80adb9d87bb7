"""Refusals that keep a serving model safe, against the real stack:

- a version whose holdout gate was skipped (it reads fewer features than production, so the comparison could
  not be made) is kept out of production: by the trainer when the job asks for production, by the registry
  when the CLI promotes it; ``--force`` with a reason puts it there and the audit trail records who and why;
- re-declaring a stream's schema without a field (or with another type for it) that a production version
  reads is refused with the diff (REST 409, gRPC FAILED_PRECONDITION, ``mlops schema plan``) unless forced
  with a reason, which is audited; dropping a field no serving version reads goes through.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from mlops.v1 import ingest_pb2, ingest_pb2_grpc
from tests.integration import toy_model
from tests.integration.stack import Stack
from tests.integration.test_trainer_end_to_end import EPOCHS, _job, _stream, _wait

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


def _audited(stack: Stack, http: httpx.Client, action: str, target: str,
             match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The audit entry for ``action`` on ``target`` once it has come through ``audit.log``."""
    def found() -> dict[str, Any] | None:
        r = http.get(stack.url("registry", "/v1/audit"), params={"action": action, "target": target, "limit": 100})
        assert r.status_code == 200, r.text
        return next((e for e in r.json()["entries"] if match(e)), None)

    return _wait(f"audit entry {action} on {target}", found, timeout_s=90)


def test_a_skipped_holdout_gate_keeps_a_version_out_of_production_until_forced(
        stack: Stack, http: httpx.Client) -> None:
    stream = _stream(stack, http)
    model = f"gated-{uuid.uuid4().hex[:8]}"
    base = {"model": model, "stream": stream, "label": "label", "seed": 3, "epochs": EPOCHS}
    first = _job(stack, http, {**base, "features": ["x1", "x2"], "stage": "production"})
    assert first["state"] == "succeeded", first  # the first production version: nothing to compare with

    fewer = _job(stack, http, {**base, "features": ["x1"], "stage": "production", "reason": "x2 is costly"})
    assert fewer["state"] == "failed", fewer
    assert "cannot go to production" in fewer["error"] and "gate holdout skipped" in fewer["error"], fewer["error"]
    assert "x2" in fewer["error"] and fewer["version"] == ""
    production = http.get(stack.url("registry", f"/v1/models/{model}/aliases/production")).json()
    assert production["version"] == "1"

    candidate = _job(stack, http, {**base, "features": ["x1"], "stage": "candidate"})
    assert candidate["state"] == "succeeded", candidate
    holdout = next(g for g in candidate["gates"] if g["name"] == "holdout")
    assert holdout["skipped"] and not holdout["not_applicable"]
    version = candidate["version"]

    refused = stack.mlops("models", "promote", model, version, "--to", "production", check=False)
    assert refused.returncode == 1 and "409" in refused.stdout and "holdout" in refused.stdout, refused.stdout
    no_reason = http.post(stack.url("registry", f"/v1/models/{model}/versions/{version}/stage"),
                          json={"stage": "production", "force": True})
    assert no_reason.status_code == 400 and no_reason.json()["error"]["field"] == "reason", no_reason.text
    assert http.get(stack.url("registry", f"/v1/models/{model}/aliases/production")).json()["version"] == "1"

    forced = stack.mlops("models", "promote", model, version, "--to", "production", "--force",
                         "--reason", "x2 is retired upstream", check=False)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert http.get(stack.url("registry", f"/v1/models/{model}/aliases/production")).json()["version"] == version
    assert http.get(stack.url("registry", f"/v1/models/{model}/versions/1")).json()["stage"] == "archived"
    entry = _audited(stack, http, "stage.forced", f"{model}/{version}",
                     lambda e: "x2 is retired upstream" in e["reason"])
    assert "gate holdout skipped" in entry["reason"], entry


def _put_schema(stack: Stack, http: httpx.Client, stream: str, fields: dict[str, str],
                **query: str) -> httpx.Response:
    return http.put(stack.url("ingest", f"/v1/streams/{stream}/schema"), params=query,
                    json={"fields": [{"name": n, "type": t} for n, t in fields.items()]})


def test_a_schema_change_that_drops_a_field_production_reads_is_refused_with_the_diff(
        stack: Stack, http: httpx.Client, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    model, stream, read, unread = f"schema-{run}", f"schema{run}", f"read_{run}", f"unread_{run}"
    v1 = toy_model.register(stack.grpc("registry"), model, [read, "amount"], stage="production")
    fields = {read: "float", "amount": "float", unread: "string"}
    assert _put_schema(stack, http, stream, fields).status_code == 200

    dropped = _put_schema(stack, http, stream, {"amount": "float", unread: "string"})
    assert dropped.status_code == 409, dropped.text
    details = dropped.json()["error"]["details"]
    assert details["dropped"] == [read] and details["breaking"]
    assert details["read_by"][read] == [f"{model} v{v1.version} (production)"]
    retyped = _put_schema(stack, http, stream, {read: "string", "amount": "float", unread: "string"})
    assert retyped.status_code == 409 and retyped.json()["error"]["details"]["retyped"] == [
        {"field": read, "from": "float", "to": "string"}], retyped.text
    with grpc.insecure_channel(stack.grpc("ingest")) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.PutSchema(ingest_pb2.StreamSchema(stream=stream, fields=[ingest_pb2.FieldSpec(
                name="amount", type="float", required=True)]), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and read in (err.value.details() or "")

    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps({"fields": [{"name": "amount", "type": "float"}]}))
    plan = stack.mlops("schema", "plan", stream, str(schema_file), "--json")
    planned = json.loads(plan.stdout)
    assert sorted(planned["dropped"]) == sorted([read, unread]) and planned["breaking"], plan.stdout
    applied = stack.mlops("schema", "apply", stream, str(schema_file), check=False)
    assert applied.returncode == 1 and "409" in applied.stdout, applied.stdout
    stored = http.get(stack.url("ingest", f"/v1/streams/{stream}/schema")).json()
    assert stored["version"] == 1 and [f["name"] for f in stored["fields"]] == list(fields)

    unread_dropped = _put_schema(stack, http, stream, {read: "float", "amount": "float"})
    assert unread_dropped.status_code == 200 and unread_dropped.json()["changes"]["dropped"] == [unread]
    no_reason = _put_schema(stack, http, stream, {"amount": "float"}, force="true")
    assert no_reason.status_code == 400 and no_reason.json()["error"]["field"] == "reason", no_reason.text
    forced = _put_schema(stack, http, stream, {"amount": "float"}, force="true",
                         reason=f"{read} moves to another stream")
    assert forced.status_code == 200 and forced.json()["version"] == 3, forced.text
    entry = _audited(stack, http, "schema.forced", f"stream:{stream}",
                     lambda e: f"{read} moves to another stream" in e["reason"])
    assert f"drops {read}" in entry["reason"] and f"{model} v{v1.version} (production)" in entry["reason"]
