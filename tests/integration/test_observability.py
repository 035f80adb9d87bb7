"""Observability on the real stack: one predict call and its feedback form one connected trace across
processes and Kafka hops; every service's /metrics parses and has the metrics docs/operations.md names."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops.settings import SERVICES
from tests.integration import toy_model
from tests.integration.otlp import OtlpReceiver
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


async def _deploy(stack: Stack, http: httpx.AsyncClient) -> tuple[str, str, str]:
    run = uuid.uuid4().hex[:8]
    model, endpoint = f"traced-{run}", f"traced-{run}"
    version = (await asyncio.to_thread(toy_model.register, stack.grpc("registry"), model, ["a", "b"])).version
    await asyncio.to_thread(toy_model.wait_ready, stack.url("inference"), model, version)
    r = await http.put(stack.url("bandit-router", f"/v1/endpoints/{endpoint}"), json={
        "variants": [{"name": "only", "model": model, "alias": "production", "weight": 1.0}],
        "policy": {"type": "fixed"}})
    assert r.status_code == 200, r.text
    return model, version, endpoint


async def test_predict_and_feedback_form_one_connected_trace(stack: Stack, otlp: OtlpReceiver) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        _, _, endpoint = await _deploy(stack, http)
        trace_id = uuid.uuid4().hex
        traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
        r = await http.post(stack.url("bandit-router", f"/v1/endpoints/{endpoint}/predict"),
                            json={"features": {"a": 1.0, "b": 2.0}}, headers={"traceparent": traceparent})
        assert r.status_code == 200, r.text
        prediction_id = r.json()["prediction_id"]
        r = await http.post(stack.url("feedback", "/v1/feedback"), json={"prediction_id": prediction_id, "label": 1})
        assert r.status_code == 202, r.text

    wanted_services = {"mlops-bandit-router", "mlops-inference", "mlops-feedback"}
    spans = []
    for _ in range(120):
        spans = otlp.spans(trace_id)
        names = {(s.service, s.name) for s in spans}
        if (wanted_services <= {s.service for s in spans}
                and ("mlops-bandit-router", "send predictions") in names
                and ("mlops-feedback", "process predictions") in names):
            break
        await asyncio.sleep(0.25)
    services = {s.service for s in spans}
    assert wanted_services <= services, f"trace {trace_id} only reached {services}"
    names = {(s.service, s.name) for s in spans}
    assert ("mlops-bandit-router", "send predictions") in names, names
    assert ("mlops-feedback", "process predictions") in names, names
    assert any(s.service == "mlops-inference" and "ModelInfer" in s.name for s in spans), names

    # Connected: every span's parent is in the same trace, except the caller's own (the root we made up).
    # Processes export in batches, so a child can arrive before its parent: give parents a moment.
    root = traceparent.split("-")[2]
    orphans: list = []
    for _ in range(60):
        spans = otlp.spans(trace_id)
        ids = {s.span_id for s in spans}
        orphans = [s for s in spans if s.parent_span_id not in ids and s.parent_span_id != root]
        if not orphans:
            break
        await asyncio.sleep(0.25)
    assert not orphans, f"spans whose parent is missing from the trace: {[(o.service, o.name) for o in orphans]}"
    kafka = [s for s in spans if s.attributes.get("messaging.system") == "kafka"]
    assert {s.attributes.get("messaging.destination.name") for s in kafka} >= {"predictions"}


def _documented_metrics() -> dict[str, set[str]]:
    """``metric -> services`` from the metrics table of docs/operations.md (rows: | `name` | services | ...)."""
    out: dict[str, set[str]] = {}
    for line in OPERATIONS.read_text().splitlines():
        m = re.match(r"^\|\s*`(mlops_[a-z0-9_]+)`\s*\|\s*([^|]+)\|", line)
        if m:
            services = {s.strip() for s in m.group(2).split(",")}
            out[m.group(1)] = set(SERVICES) if "all" in services else services
    return out


async def test_every_service_exposes_the_documented_metrics(stack: Stack) -> None:
    documented = _documented_metrics()
    assert documented, "docs/operations.md has no metrics table"
    async with httpx.AsyncClient(timeout=30) as http:
        for service in SERVICES:
            r = await http.get(stack.url(service, "/metrics"))
            assert r.status_code == 200
            families = list(text_string_to_metric_families(r.text))
            exposed = {f.name for f in families} | {s.name for f in families for s in f.samples}
            exposed |= set(re.findall(r"^# HELP (\S+)", r.text, flags=re.M))
            missing = [m for m, where in documented.items() if service in where and m not in exposed
                       and m.removesuffix("_total") not in exposed]
            assert not missing, f"{service} lacks documented metrics {missing}"


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _referenced_metrics() -> dict[str, set[str]]:
    """``file -> metric names`` used by the Grafana dashboards and the Prometheus alert rules."""
    out: dict[str, set[str]] = {}
    files = [*sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")), DEPLOY / "prometheus" / "alerts.yml"]
    for path in files:
        names = set(re.findall(r"\b(mlops_[a-z0-9_]+)", path.read_text()))
        out[path.name] = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
    return out


async def test_dashboards_and_alerts_reference_only_metrics_that_exist(stack: Stack) -> None:
    exposed: set[str] = set()
    async with httpx.AsyncClient(timeout=30) as http:
        for service in SERVICES:
            text = (await http.get(stack.url(service, "/metrics"))).text
            exposed |= set(re.findall(r"^# HELP (\S+)", text, flags=re.M))
    # Counters are declared without their _total suffix in HELP lines.
    exposed |= {f"{n}_total" for n in exposed}
    for name, metrics in _referenced_metrics().items():
        unknown = sorted(m for m in metrics if m not in exposed)
        assert not unknown, f"{name} uses metrics no service exposes: {unknown}"
