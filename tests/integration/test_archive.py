"""The prediction archive on the real stack: a prediction is found by id, by model version and by time,
with its feedback joined."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.integration import toy_model
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


async def test_a_prediction_is_found_with_its_version_and_feedback(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    model, endpoint = f"arch-{run}", f"arch-{run}"
    version = (await asyncio.to_thread(toy_model.register, stack.grpc("registry"), model, ["a", "b"])).version
    await asyncio.to_thread(toy_model.wait_ready, stack.url("inference"), model, version)
    started = datetime.now(UTC) - timedelta(seconds=5)
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.put(stack.url("bandit-router", f"/v1/endpoints/{endpoint}"), json={
            "variants": [{"model": model, "version": version, "weight": 1.0}], "policy": {"type": "fixed"}})
        assert r.status_code == 200, r.text
        ids = []
        for i in range(3):
            r = await http.post(stack.url("bandit-router", f"/v1/endpoints/{endpoint}/predict"),
                                json={"features": {"a": float(i), "b": 1.0}})
            assert r.status_code == 200, r.text
            ids.append(r.json()["prediction_id"])
        r = await http.post(stack.url("feedback", "/v1/feedback"), json={"prediction_id": ids[0], "label": 1})
        assert r.status_code == 202

        found = None
        for _ in range(120):
            r = await http.get(stack.url("feedback", "/v1/predictions"), params={"prediction_id": ids[0]})
            assert r.status_code == 200, r.text
            rows = r.json()["predictions"]
            if rows and rows[0].get("feedback"):
                found = rows[0]
                break
            await asyncio.sleep(0.5)
        assert found is not None, "the prediction never reached the archive with its feedback"
        assert found["model"] == model and found["version"] == version
        assert found["feedback"]["label"] == 1.0 and "reward" in found["feedback"]
        assert found["features"] and len(found["outputs"]) == 2

        r = await http.get(stack.url("feedback", "/v1/predictions"),
                           params={"model": model, "version": version, "start": started.isoformat()})
        by_version = {row["prediction_id"] for row in r.json()["predictions"]}
        assert set(ids) <= by_version
        r = await http.get(stack.url("feedback", "/v1/predictions"),
                           params={"model": model, "end": started.isoformat()})
        assert r.json()["predictions"] == []
        r = await http.get(stack.url("feedback", "/v1/predictions"), params={"version": "1"})
        assert r.status_code == 400 and r.json()["error"]["field"] == "model"
