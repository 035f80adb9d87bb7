"""Training jobs against the real stack: events through ingest and the feature service, a job from REST, the
CLI or ``training.requests``, its run and version in the registry.

- a job end to end yields a run with every captured field and a candidate version with full lineage;
- a rerun with the same dataset, code and seed reproduces the metrics exactly (``mlops runs compare``);
- a forced gate failure (an unfair model) leaves a failed run with the reason and no version;
- an empty request on ``training.requests`` trains as the production version was trained;
- a job with two data-parallel processes (torchrun, gloo) trains.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any

import grpc
import httpx
import pytest

from mlops.bus import topics
from mlops.bus.envelope import build_headers
from mlops.v1 import events_pb2, registry_pb2, registry_pb2_grpc
from tests.integration.kafka_util import produce
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

EPOCHS = 12


def _events(run: str, n: int, *, unfair: bool = False) -> list[dict[str, Any]]:
    """x1 + x2 > 0 is the label; with ``unfair``, group "b" gets coin flips instead."""
    rng = random.Random(11)
    out = []
    for i in range(n):
        x1, x2 = rng.uniform(-1, 1), rng.uniform(-1, 1)
        group = "a" if i % 2 == 0 else "b"
        label = int(x1 + x2 > 0) if not (unfair and group == "b") else rng.randint(0, 1)
        out.append({"event_id": f"{run}-{i}", "entity_id": f"{run}-u{i}", "x1": x1, "x2": x2, "group": group,
                    "label": label})
    return out


def _wait(what: str, check, timeout_s: float = 120.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _stream(stack: Stack, http: httpx.Client, n: int = 600, *, unfair: bool = False) -> str:
    """A new stream with ``n`` events, every one of them in the offline store."""
    run = uuid.uuid4().hex[:8]
    stream = f"train{run}"
    r = http.put(stack.url("ingest", f"/v1/streams/{stream}/schema"), json={"fields": [
        {"name": "x1", "type": "float"}, {"name": "x2", "type": "float"}, {"name": "group", "type": "string"},
        {"name": "label", "type": "int", "min": 0, "max": 1}]})
    assert r.status_code == 200, r.text
    r = http.post(stack.url("ingest", f"/v1/streams/{stream}/events"), json=_events(run, n, unfair=unfair))
    assert r.status_code == 202 and r.json()["accepted"] == n, r.text

    def offline() -> bool:
        r = http.post(stack.url("feature", "/v1/datasets"), json={"stream": stream, "features": ["x1", "x2"],
                                                                   "label": "label"})
        return r.status_code == 201 and r.json()["rows"] == n

    _wait("every event in the offline store", offline)
    return stream


def _job(stack: Stack, http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = http.post(stack.url("trainer", "/v1/training-jobs"), json=body)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    def done() -> dict[str, Any] | None:
        job = http.get(stack.url("trainer", f"/v1/training-jobs/{job_id}")).json()
        return job if job["state"] in ("succeeded", "failed") else None

    return _wait(f"training job {job_id}", done, timeout_s=240)


@pytest.fixture(scope="module")
def http() -> httpx.Client:
    with httpx.Client(timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def stream(stack: Stack, http: httpx.Client) -> str:
    return _stream(stack, http)


def test_a_job_yields_a_run_with_every_captured_field_and_a_candidate_with_full_lineage(
    stack: Stack, http: httpx.Client, stream: str
) -> None:
    model = f"jobs-{uuid.uuid4().hex[:8]}"
    out = stack.mlops("train", model, "--stream", stream, "--features", "x1,x2", "--label", "label",
                      "--seed", "3", "--epochs", str(EPOCHS), "--reason", "first model", "--json")
    job = json.loads(out.stdout[out.stdout.index("{"):])
    assert job["state"] == "succeeded", job
    assert job["spec"]["stage"] == "candidate" and job["metrics"]["accuracy"] > 0.85
    version = http.get(stack.url("registry", f"/v1/models/{model}/versions/{job['version']}")).json()
    assert version["stage"] == "candidate" and version["run_id"] == job["run_id"]
    assert version["transitions"][0]["reason"] == "first model" and version["transitions"][0]["actor"] == "trainer"

    run = http.get(stack.url("registry", f"/v1/runs/{job['run_id']}")).json()
    env = run["env"]
    assert run["status"] == "finished" and run["experiment"] == model
    assert len(env["git_commit"]) >= 40 and isinstance(env["git_dirty"], bool)
    assert (len(env["diff_sha256"]) == 64) == env["git_dirty"]
    assert env["python_version"].startswith("CPython 3.") and "torch==" in env["pip_freeze"]
    assert env["dataset_id"] == job["dataset_id"] and env["seed"] == 3 and env["hardware"].startswith(("cpu:", "cuda:"))
    assert [p["step"] for p in run["metric_history"] if p["key"] == "accuracy"][:EPOCHS] == list(range(1, EPOCHS + 1))
    assert {g["name"]: (g["passed"], g["skipped"]) for g in run["gates"]} == {
        "holdout": (True, True), "fairness": (True, True), "robustness": (True, False)}

    lineage = http.get(stack.url("registry", f"/v1/models/{model}/versions/{job['version']}/lineage")).json()
    card = http.get(stack.url("feature", f"/v1/datasets/{lineage['dataset_id']}")).json()
    assert lineage["run_id"] == run["id"] and lineage["dataset_id"] == job["dataset_id"]
    assert lineage["definitions_hash"] == card["definitions_hash"] != ""
    assert lineage["git_commit"] == env["git_commit"] and (lineage["stream"], lineage["label"]) == (stream, "label")
    assert lineage["features"] == ["x1", "x2"]

    # The reference distributions, over REST and gRPC, in the format the drift service reads.
    raw = http.get(stack.url("registry", f"/v1/models/{model}/versions/{job['version']}/reference"))
    assert raw.status_code == 200
    ref = raw.json()
    assert ref["rows"] == 600 and set(ref["features"]) == {"x1", "x2"}
    assert len(ref["features"]["x1"]["edges"]) == 11 and sum(ref["features"]["x1"]["counts"]) == 600
    assert len(ref["prediction"]["sample"]) == 600
    with grpc.insecure_channel(stack.grpc("registry")) as channel:
        got = registry_pb2_grpc.RegistryServiceStub(channel).GetReference(
            registry_pb2.ModelVersionRef(model=model, version=job["version"]), timeout=30)
    assert got.json == raw.content

    md = stack.mlops("models", "card", model, job["version"]).stdout
    for section in ("## Intended use", "## Data", "## Metrics", "## Evaluation gates", "## Fairness",
                    "## Limitations", "## Lineage", lineage["dataset_id"], env["git_commit"]):
        assert section in md


def test_a_rerun_reproduces_the_metrics_exactly(stack: Stack, http: httpx.Client, stream: str) -> None:
    model = f"repro-{uuid.uuid4().hex[:8]}"
    spec = {"model": model, "stream": stream, "features": ["x1", "x2"], "label": "label", "seed": 7,
            "epochs": EPOCHS}
    first, second = _job(stack, http, spec), _job(stack, http, spec)
    assert first["state"] == second["state"] == "succeeded", (first, second)
    assert first["dataset_id"] == second["dataset_id"] and first["run_id"] != second["run_id"]
    assert first["metrics"] == second["metrics"]
    a, b = (http.get(stack.url("registry", f"/v1/models/{model}/versions/{v}")).json() for v in ("1", "2"))
    assert a["artifact_sha256"] == b["artifact_sha256"]  # the weights are the same, byte for byte
    compared = json.loads(stack.mlops("runs", "compare", first["run_id"], second["run_id"], "--json").stdout)
    assert compared["differences"]["metrics"] == [] and compared["differences"]["params"] == []
    assert set(compared["metric_deltas"].values()) == {0.0}
    table = stack.mlops("runs", "compare", first["run_id"], second["run_id"]).stdout
    assert "accuracy" in table and "dataset_id" in table


def test_a_failed_gate_leaves_a_failed_run_and_no_version(stack: Stack, http: httpx.Client) -> None:
    unfair = _stream(stack, http, n=800, unfair=True)
    model = f"unfair-{uuid.uuid4().hex[:8]}"
    job = _job(stack, http, {"model": model, "stream": unfair, "features": ["x1", "x2"], "label": "label",
                             "seed": 1, "epochs": EPOCHS, "sensitive_attribute": "group", "fairness_max_gap": 0.1})
    assert job["state"] == "failed" and job["error"].startswith("gate fairness failed"), job
    assert job["version"] == "" and job["run_id"]
    run = http.get(stack.url("registry", f"/v1/runs/{job['run_id']}")).json()
    assert run["status"] == "failed" and run["reason"] == job["error"]
    fairness = next(g for g in run["gates"] if g["name"] == "fairness")
    assert not fairness["passed"] and fairness["details"]["worst_group"] == "b"
    assert run["params"]["sensitive_attribute"] == "group"
    assert http.get(stack.url("registry", f"/v1/models/{model}")).status_code == 404


def test_an_empty_request_trains_as_production_was_trained(stack: Stack, http: httpx.Client, stream: str) -> None:
    model = f"loop-{uuid.uuid4().hex[:8]}"
    # The CLI trains at candidate (all the trainer registers) and then sets production with the caller's token.
    out = stack.mlops("train", model, "--stream", stream, "--features", "x1,x2", "--label", "label", "--seed", "5",
                      "--epochs", str(EPOCHS), "--stage", "production", "--json")
    first = json.loads(out.stdout[out.stdout.index("{"):])
    assert first["state"] == "succeeded" and first["spec"]["stage"] == "candidate", first
    assert first["stage_change"]["stage"] == "production"
    assert http.get(stack.url("registry", f"/v1/models/{model}/versions/1")).json()["stage"] == "production"
    request_id = f"retrain-{uuid.uuid4().hex[:8]}"
    msg = events_pb2.TrainingRequest(request_id=request_id, model=model, reason="drift on x1", stage="candidate",
                                     epochs=EPOCHS, seed=5)
    record = (model.encode(), msg.SerializeToString(), build_headers(request_id, []))
    asyncio.run(produce(stack.kafka, topics.TRAINING_REQUESTS, [record]))

    def retrained() -> dict[str, Any] | None:
        jobs = http.get(stack.url("trainer", "/v1/training-jobs"), params={"limit": 200}).json()["jobs"]
        job = next((j for j in jobs if j["request_id"] == request_id), None)
        return job if job and job["state"] in ("succeeded", "failed") else None

    job = _wait("the retraining job", retrained, timeout_s=240)
    assert job["state"] == "succeeded", job
    assert job["inherited_from"] == f"{model}/1" and job["spec"]["stream"] == ""
    assert job["dataset_id"] == first["dataset_id"]  # the same stream, features and label
    version = http.get(stack.url("registry", f"/v1/models/{model}/versions/{job['version']}")).json()
    assert version["stage"] == "candidate" and version["signature"]["features"] == ["x1", "x2"]
    holdout = next(g for g in job["gates"] if g["name"] == "holdout")
    assert not holdout["skipped"] and holdout["details"]["production_version"] == "1"
    run = http.get(stack.url("registry", f"/v1/runs/{job['run_id']}")).json()
    assert run["params"]["inherited_from"] == f"{model}/1" and run["tags"]["reason"] == "drift on x1"


def test_two_data_parallel_processes_train(stack: Stack, http: httpx.Client, stream: str) -> None:
    model = f"ddp-{uuid.uuid4().hex[:8]}"
    job = _job(stack, http, {"model": model, "stream": stream, "features": ["x1", "x2"], "label": "label",
                             "seed": 2, "epochs": EPOCHS, "processes": 2})
    assert job["state"] == "succeeded", job
    assert job["metrics"]["accuracy"] > 0.85
    run = http.get(stack.url("registry", f"/v1/runs/{job['run_id']}")).json()
    assert run["params"]["processes"] == "2" and "data-parallel x2" in run["env"]["hardware"]
    assert [p["step"] for p in run["metric_history"] if p["key"] == "accuracy"][:EPOCHS] == list(range(1, EPOCHS + 1))
