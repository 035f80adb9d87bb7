"""Memory under abuse stays bounded: each service's peak resident set (``VmHWM``, reset to the current
``VmRSS`` first through ``/proc/<pid>/clear_refs``) grows by less than 64 MiB while it takes oversized
chunked bodies (anonymous and authenticated), compression bombs, deeply nested JSON and requests to paths
no route matches. Linux only, as the suite's stack is."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from mlops.settings import PlatformSettings
from tests.security.abuse import MIB, bomb, deep_json, send_chunked
from tests.security.conftest import SecureStack

BOUND_KIB = 64 * 1024

#: A route per service that takes a body, with a role that may call it (``None``: only unknown paths).
BODY_ROUTE: dict[str, tuple[str, str] | None] = {
    "ingest": ("/v1/streams/s/events", "producer"),
    "feature": ("/v1/features/online", "viewer"),
    "registry": ("/v1/models/m/versions/1/stage", "scientist"),
    "trainer": ("/v1/training-jobs", "scientist"),
    "inference": ("/v2/models/m/infer", "predictor"),
    "bandit-router": ("/v1/endpoints/e/predict", "predictor"),
    "feedback": ("/v1/feedback", "predictor"),
    "drift": None,
}


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise ValueError(f"no {key} for pid {pid}")


def _service_pid(secure: SecureStack, service: str) -> int:
    state = json.loads((secure.home / "run" / "stack.json").read_text())
    return next(int(p["pid"]) for p in state["procs"] if p["name"] == service and p.get("kind") == "service")


def _peak_growth_kib(pid: int, abuse: Callable[[], None]) -> int:
    """How far the peak resident set of ``pid`` rose above its resident set while ``abuse`` ran."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    baseline = _status_kib(pid, "VmRSS")
    abuse()
    return _status_kib(pid, "VmHWM") - baseline


@pytest.mark.parametrize("service", list(BODY_ROUTE))
def test_rss_growth_under_abuse_is_bounded(secure: SecureStack, service: str) -> None:
    limit = int(secure.env.get("MLOPS_MAX_BODY_BYTES") or PlatformSettings.model_fields["max_body_bytes"].default)
    route = BODY_ROUTE[service]

    def abuse() -> None:
        for _ in range(2):
            send_chunked(secure.url(service, "/v1/anything"), {}, total=64 * MIB)
        if route is not None:
            path, role = route
            for _ in range(2):
                send_chunked(secure.url(service, path), secure.headers(role), total=max(64 * MIB, 2 * limit))
            with secure.http(role, timeout=120) as http:
                http.post(secure.url(service, path), content=deep_json(200_000),
                          headers={"content-type": "application/json"})
        if service == "inference":
            with secure.http("predictor", timeout=120) as http:
                for encoding in ("gzip", "deflate"):
                    http.post(secure.url(service, "/v2/models/m/infer"), content=bomb(384 * MIB, encoding),
                              headers={"content-encoding": encoding, "content-type": "application/json"})
        with httpx.Client(timeout=30) as anonymous:
            for i in range(200):
                anonymous.get(secure.url(service, f"/probe-{uuid.uuid4().hex}/{i}"))

    pid = _service_pid(secure, service)
    growth = _peak_growth_kib(pid, abuse)
    assert httpx.get(secure.url(service, "/healthz"), timeout=30).status_code == 200
    assert growth < BOUND_KIB, f"{service}: peak RSS grew {growth // 1024} MiB under abuse"
