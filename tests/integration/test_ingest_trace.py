"""Traces through the batch consumers: an event sent over REST, and one produced to ``events.raw``, each
with a W3C traceparent, end in traces that reach the feature service's processing of events.validated."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.kafka_util import produce
from tests.integration.otlp import OtlpReceiver
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


async def _spans(otlp: OtlpReceiver, trace_id: str, wanted: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Spans of the trace, or linking to it (an event that shared a batch with others is linked from it)."""
    names: set[tuple[str, str]] = set()
    for _ in range(120):
        names = {(s.service, s.name) for s in otlp.spans() if s.trace_id == trace_id or trace_id in s.links}
        if wanted <= names:
            break
        await asyncio.sleep(0.25)
    return names


async def _quiet(http: httpx.AsyncClient, stack: Stack) -> None:
    """Wait until ingest and feature have caught up with their topics, so the next event travels alone."""
    for _ in range(240):
        lag = 0.0
        for service in ("ingest", "feature"):
            text = (await http.get(stack.url(service, "/metrics"))).text
            lag += sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                       if s.name == "mlops_consumer_lag")
        if lag == 0:
            return
        await asyncio.sleep(0.25)


async def test_an_event_keeps_its_trace_into_the_feature_service(stack: Stack, otlp: OtlpReceiver) -> None:
    stream = f"tr{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.put(stack.url("ingest", f"/v1/streams/{stream}/schema"),
                           json={"fields": [{"name": "amount", "type": "float"}]})
        assert r.status_code == 200
        await _quiet(http, stack)
        rest_trace = uuid.uuid4().hex
        r = await http.post(stack.url("ingest", f"/v1/streams/{stream}/events"), json=[{"entity_id": "a", "amount": 1}],
                            headers={"traceparent": f"00-{rest_trace}-{uuid.uuid4().hex[:16]}-01"})
        assert r.status_code == 202
    wanted = {("mlops-ingest", "POST /v1/streams/{stream}/events"), ("mlops-ingest", "send events.validated"),
              ("mlops-feature", "process events.validated")}
    assert wanted <= await _spans(otlp, rest_trace, wanted)

    async with httpx.AsyncClient(timeout=30) as http:
        await _quiet(http, stack)
    kafka_trace = uuid.uuid4().hex
    value = json.dumps({"stream": stream, "entity_id": "b", "amount": 2}).encode()
    headers = [("traceparent", f"00-{kafka_trace}-{uuid.uuid4().hex[:16]}-01".encode()),
               ("content-type", b"application/json")]
    await produce(stack.kafka, "events.raw", [(b"b", value, headers)])
    wanted = {("mlops-ingest", "process events.raw"), ("mlops-ingest", "send events.validated"),
              ("mlops-feature", "process events.validated")}
    assert wanted <= await _spans(otlp, kafka_trace, wanted)
