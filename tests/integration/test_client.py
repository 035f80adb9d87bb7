"""The Python client against the real stack: events in, a prediction out, feedback back; typed errors."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from mlops.client import Client
from mlops.errors import InvalidArgument, NotFound, Unavailable
from tests.integration import toy_model
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def _client(stack: Stack, **kwargs) -> Client:  # type: ignore[no-untyped-def]
    return Client(router=stack.url("bandit-router"), feedback=stack.url("feedback"), ingest=stack.url("ingest"),
                  **kwargs)


async def test_events_predict_feedback(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    stream, model, endpoint = f"cli{run}", f"cli-{run}", f"cli-{run}"
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.put(stack.url("ingest", f"/v1/streams/{stream}/schema"),
                           json={"fields": [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}]})
        assert r.status_code == 200
        version = (await asyncio.to_thread(toy_model.register, stack.grpc("registry"), model, ["a", "b"])).version
        await asyncio.to_thread(toy_model.wait_ready, stack.url("inference"), model, version)
        r = await http.put(stack.url("bandit-router", f"/v1/endpoints/{endpoint}"), json={
            "variants": [{"model": model, "version": version, "weight": 1.0}], "policy": {"type": "fixed"}})
        assert r.status_code == 200, r.text

    def flow() -> None:
        with _client(stack) as mlops:
            result = mlops.send_events(stream, [{"event_id": f"{run}-1", "entity_id": "e1", "a": 1.0, "b": 2.0}])
            assert (result.accepted, result.duplicates) == (1, 0)
            again = mlops.send_events(stream, [{"event_id": f"{run}-1", "entity_id": "e1", "a": 1.0, "b": 2.0}])
            assert (again.accepted, again.duplicates) == (0, 1)
            with pytest.raises(InvalidArgument) as err:
                mlops.send_events(stream, [{"entity_id": "e1", "a": "x", "b": 2.0}])
            assert err.value.field == "a"

            prediction = mlops.predict(endpoint, features={"a": 1.0, "b": 2.0}, unit_id="u1")
            assert prediction is not None and prediction.model == model and prediction.version == version
            assert len(prediction.outputs) == 2
            mlops.feedback(prediction.prediction_id, label=1)
            with pytest.raises(NotFound):
                mlops.predict(f"no-such-{run}", features={"a": 1.0})
            with pytest.raises(InvalidArgument) as err:
                mlops.feedback("")
            assert err.value.field

    await asyncio.to_thread(flow)


def test_unreachable_service_is_a_typed_error() -> None:
    with Client(router="http://127.0.0.1:9", retries=1, backoff_s=0.01) as mlops:
        with pytest.raises(Unavailable):
            mlops.predict("x", features={"a": 1.0})
