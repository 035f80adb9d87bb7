"""The thin loop through all eight services, against the real embedded stack:
events -> ingest -> feature (Redis) -> trainer -> registry -> models.lifecycle -> inference ->
bandit-router predict -> feedback -> reward at the router; the drift service consumes predictions."""

from __future__ import annotations

import asyncio
import random
import uuid

import httpx
import pytest
import tritonclient.http as triton_http

from tests.integration.kafka_util import header, read_until
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


async def _poll(what: str, check, timeout_s: float = 120.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


async def test_thin_loop_through_all_eight_services(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    stream, model, endpoint = f"loop{run}", f"loop-model-{run}", f"loop-{run}"
    rng = random.Random(7)
    events = []
    for i in range(600):
        x1, x2 = rng.uniform(-1, 1), rng.uniform(-1, 1)
        events.append({"event_id": f"{run}-{i}", "entity_id": f"{run}-u{i}", "x1": x1, "x2": x2,
                       "label": int(x1 + x2 > 0)})
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.put(stack.url("ingest", f"/v1/streams/{stream}/schema"), json={"fields": [
            {"name": "x1", "type": "float"}, {"name": "x2", "type": "float"},
            {"name": "label", "type": "int", "min": 0, "max": 1}]})
        assert r.status_code == 200, r.text
        r = await http.post(stack.url("ingest", f"/v1/streams/{stream}/events"), json=events)
        assert r.status_code == 202 and r.json()["accepted"] == 600, r.text

        # Events reach the feature service and land in Redis.
        async def online() -> bool:
            r = await http.post(stack.url("feature", "/v1/features/online"), json={"entities": [f"{run}-u599"]})
            return r.json()["rows"][0]["found"]

        await _poll("features in the online store", online)

        async def offline() -> bool:
            r = await http.post(stack.url("feature", "/v1/datasets"),
                                json={"stream": stream, "features": ["x1", "x2"], "label": "label"})
            return r.status_code == 201 and r.json()["rows"] == 600

        await _poll("every event in the offline store", offline)

        # The trainer trains from those features and registers the model.
        r = await http.post(stack.url("trainer", "/v1/training-jobs"), json={
            "model": model, "stream": stream, "features": ["x1", "x2"], "label": "label",
            "stage": "production", "seed": 1})
        assert r.status_code in (200, 201, 202), r.text
        job_id = r.json()["id"]

        async def job_done():  # type: ignore[no-untyped-def]
            job = (await http.get(stack.url("trainer", f"/v1/training-jobs/{job_id}"))).json()
            return job if job["state"] in ("succeeded", "failed") else None

        job = await _poll("the training job", job_done, timeout_s=240)
        assert job["state"] == "succeeded", job
        version = str(job["version"])
        assert job["metrics"]["accuracy"] > 0.8

        models = (await http.get(stack.url("registry", "/v1/models"))).json()
        assert model in str(models)

    # The registry published the registration on models.lifecycle.
    lifecycle = await read_until(
        stack.kafka, "models.lifecycle",
        lambda recs: any(model.encode() in r.value for r in recs), timeout_s=60)
    assert any(model.encode() in r.value and header(r, "event_id") for r in lifecycle)

    # Inference loads it; an unmodified tritonclient sees it ready.
    client = triton_http.InferenceServerClient(url=stack.url("inference").removeprefix("http://"))

    async def ready() -> bool:
        return await asyncio.to_thread(client.is_model_ready, model, version)

    await _poll("inference to load the model", ready)

    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.put(stack.url("bandit-router", f"/v1/endpoints/{endpoint}"), json={
            "variants": [{"name": "primary", "model": model, "alias": "production", "weight": 1.0}],
            "policy": {"type": "fixed"}})
        assert r.status_code == 200, r.text

        # Predict with features in the request, and by entity_id from the online store.
        r = await http.post(stack.url("bandit-router", f"/v1/endpoints/{endpoint}/predict"),
                            json={"unit_id": "user-1", "features": {"x1": 0.9, "x2": 0.8}})
        assert r.status_code == 200, r.text
        pred = r.json()
        assert pred["prediction_id"] and pred["model"] == model and str(pred["version"]) == version
        assert len(pred["outputs"]) == 2 and pred["outputs"][1] > 0.5
        r = await http.post(stack.url("bandit-router", f"/v1/endpoints/{endpoint}/predict"),
                            json={"entity_id": f"{run}-u3"})
        assert r.status_code == 200, r.text

        # Feedback for it reaches the router as a reward.
        r = await http.post(stack.url("feedback", "/v1/feedback"),
                            json={"prediction_id": pred["prediction_id"], "label": 1})
        assert r.status_code == 202, r.text

        async def rewarded():  # type: ignore[no-untyped-def]
            state = (await http.get(stack.url("bandit-router", f"/v1/endpoints/{endpoint}"))).json()
            return [v for v in state["variants"] if int(v.get("rewards", 0)) >= 1]

        variants = await _poll("the reward at the router", rewarded)
        assert variants[0]["reward_mean"] == 1.0

        # The drift service consumes predictions.
        async def drift_seen():  # type: ignore[no-untyped-def]
            r = await http.get(stack.url("drift", f"/v1/drift/{model}/{version}"))
            return r.status_code == 200 and r.json().get("predictions", 0) >= 2

        await _poll("the drift service to count the predictions", drift_seen)
