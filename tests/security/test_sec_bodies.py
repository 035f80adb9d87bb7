"""Hostile bodies and inputs against the auth-on stack: a chunked body (no Content-Length) is stopped at the
body limit while it is read, and an anonymous caller's is not read at all; a compressed body is inflated
only up to the limit; JSON nested past any sane depth, integers of thousands of digits and times without
an offset are a 4xx, never a 500; requests to paths no route matches share one metrics label."""

from __future__ import annotations

import gzip
import json
import re
import uuid

import httpx
import pytest

from mlops.settings import SERVICES, PlatformSettings
from tests.security.abuse import MIB, big_int_event, bomb, deep_json, send_chunked
from tests.security.conftest import SecureStack

#: Routes that take a body, each on a different service, with a role that may call it: the middleware
#: reads the registry's stage change (it is audited and names a stage), the app reads the others.
BODY_ROUTES = [
    ("registry", "/v1/models/m/versions/1/stage", "scientist"),
    ("ingest", "/v1/streams/s/events", "producer"),
    ("feature", "/v1/features/online", "viewer"),
    ("inference", "/v2/models/m/infer", "predictor"),
    ("feedback", "/v1/feedback", "predictor"),
]


def _limit(secure: SecureStack) -> int:
    return int(secure.env.get("MLOPS_MAX_BODY_BYTES") or PlatformSettings.model_fields["max_body_bytes"].default)


@pytest.mark.parametrize("service", SERVICES)
def test_an_anonymous_chunked_body_is_refused_before_it_is_read(secure: SecureStack, service: str) -> None:
    answer = send_chunked(secure.url(service, "/v1/anything"), {}, total=2 * _limit(secure))
    assert answer.status == 401, answer.head
    # The refusal came while the body was still going out: the server did not wait for it.
    assert answer.sent < _limit(secure), answer.sent


@pytest.mark.parametrize(("service", "path", "role"), BODY_ROUTES)
def test_an_authenticated_chunked_body_past_the_limit_is_413(secure: SecureStack, service: str, path: str,
                                                               role: str) -> None:
    limit = _limit(secure)
    answer = send_chunked(secure.url(service, path), secure.headers(role), total=2 * limit)
    assert answer.status == 413, answer.head
    assert answer.sent < 2 * limit, "the server read the whole body before it answered"
    assert httpx.get(secure.url(service, "/healthz"), timeout=10).status_code == 200


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compression_bomb_is_413_and_inference_stays_healthy(secure: SecureStack, encoding: str) -> None:
    body = bomb(384 * MIB, encoding)
    assert len(body) < 2 * MIB
    with secure.http("predictor", timeout=120) as http:
        resp = http.post(secure.url("inference", "/v2/models/m/infer"), content=body,
                         headers={"content-encoding": encoding, "content-type": "application/json"})
        assert resp.status_code == 413, resp.text
        assert resp.json()["code"] == "too_large"
        assert http.get(secure.url("inference", "/v2/health/live")).status_code == 200


def test_a_small_compressed_body_is_still_read(secure: SecureStack) -> None:
    request = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    with secure.http("predictor") as http:
        resp = http.post(secure.url("inference", f"/v2/models/nomodel-{uuid.uuid4().hex[:6]}/infer"),
                         content=gzip.compress(json.dumps(request).encode()),
                         headers={"content-encoding": "gzip", "content-type": "application/json"})
    # Inflated and parsed: the answer is about the model, not the encoding.
    assert resp.status_code == 404, resp.text


def test_a_truncated_gzip_body_is_400(secure: SecureStack) -> None:
    with secure.http("predictor") as http:
        resp = http.post(secure.url("inference", "/v2/models/m/infer"), content=gzip.compress(b"{}" * 100)[:20],
                         headers={"content-encoding": "gzip", "content-type": "application/json"})
    assert resp.status_code == 400, resp.text


@pytest.mark.parametrize(("service", "path", "role"), [
    ("registry", "/v1/models/m/versions/1/stage", "admin"),
    ("registry", "/v1/models/m/rollback", "admin"),
    ("ingest", "/v1/streams/s/events", "producer"),
    ("feature", "/v1/features/online", "viewer"),
    ("feature", "/v1/datasets", "scientist"),
    ("inference", "/v2/models/m/infer", "predictor"),
    ("feedback", "/v1/feedback", "predictor"),
    ("bandit-router", "/v1/endpoints/e/predict", "predictor"),
    ("trainer", "/v1/training-jobs", "scientist"),
])
def test_deeply_nested_json_is_4xx(secure: SecureStack, service: str, path: str, role: str) -> None:
    with secure.http(role) as http:
        for depth in (100, 5_000, 200_000):
            resp = http.post(secure.url(service, path), content=deep_json(depth),
                             headers={"content-type": "application/json"})
            assert 400 <= resp.status_code < 500, (depth, resp.status_code, resp.text[:300])


def test_deeply_nested_json_from_an_anonymous_caller_is_401(secure: SecureStack) -> None:
    resp = httpx.post(secure.url("registry", "/v1/models/m/versions/1/stage"), content=deep_json(200_000),
                      headers={"content-type": "application/json"}, timeout=30)
    assert resp.status_code == 401, resp.text


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
@pytest.mark.parametrize("digits", [5_000, 100_000])
def test_an_integer_of_thousands_of_digits_in_ingest_is_400(secure: SecureStack, content_type: str,
                                                            digits: int) -> None:
    with secure.http("producer") as http:
        resp = http.post(secure.url("ingest", "/v1/streams/bigints/events"), content=big_int_event(digits),
                         headers={"content-type": content_type})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "invalid_argument"


@pytest.mark.parametrize("query", [
    "start=2020-01-01T00:00:00",
    "start=2020-01-01T00:00:00&end=2030-01-01T00:00:00Z",
    "start=2020-01-01T00:00:00%2B02:00&end=2030-01-01T00:00:00",
    "end=2020-01-01T00:00:00",
])
def test_a_time_without_an_offset_is_read_as_utc(secure: SecureStack, query: str) -> None:
    with secure.http("viewer") as http:
        resp = http.get(secure.url("feedback", f"/v1/predictions?{query}"))
    assert resp.status_code == 200, resp.text


def test_a_time_range_mixing_naive_and_aware_is_compared_as_utc(secure: SecureStack) -> None:
    with secure.http("viewer") as http:
        resp = http.get(secure.url("feedback", "/v1/predictions?start=2020-01-02T00:00:00&end=2020-01-01T23:00:00Z"))
    assert resp.status_code == 400, resp.text  # end before start once both are UTC
    assert resp.json()["error"]["field"] == "end"


def _series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


@pytest.mark.parametrize("service", ["registry", "inference", "ingest"])
def test_unknown_paths_share_one_metrics_label(secure: SecureStack, service: str) -> None:
    with httpx.Client(timeout=30) as anonymous, secure.http("admin") as admin:
        for client in (anonymous, admin):  # warm both answers (401, 404) once
            client.get(secure.url(service, "/no/such/path"))
        before = _series(anonymous.get(secure.url(service, "/metrics")).text)
        for i in range(100):
            anonymous.get(secure.url(service, f"/probe-{uuid.uuid4().hex}/{i}"))
            admin.post(secure.url(service, f"/probe-{uuid.uuid4().hex}/{i}"), json={})
        text = anonymous.get(secure.url(service, "/metrics")).text
    assert "probe-" not in text
    assert re.search(r'method="[A-Z]+ unmatched"', text), text[:2000]
    # A handful of new series (the POST's own status, the scrape itself), not one per path.
    assert _series(text) - before < 60


@pytest.mark.parametrize("event", [
    {"entity_id": "a", "value": 10**400, "n": 1},  # past a float
    {"entity_id": "a", "value": 1.0, "n": 1, "event_time": 10**30},  # past year 9999
    {"entity_id": "a", "value": 1.0, "n": 1, "event_time": -(10**20)},
])
def test_numbers_no_field_holds_are_rejected_not_500(secure: SecureStack, event: dict) -> None:
    with secure.http("admin") as http:
        schema = {"fields": [{"name": "value", "type": "float"}, {"name": "n", "type": "int"}]}
        assert http.put(secure.url("ingest", "/v1/streams/ranges/schema"), json=schema).status_code == 200
        resp = http.post(secure.url("ingest", "/v1/streams/ranges/events"), content=json.dumps(event),
                         headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["rejected"][0]["index"] == 0


@pytest.mark.parametrize("version", ["1" * 5000, "%C2%B2", "99999999999999999999999"])
def test_a_version_of_thousands_of_digits_is_404(secure: SecureStack, version: str) -> None:
    with secure.http("viewer") as http:
        resp = http.get(secure.url("registry", f"/v1/models/m/versions/{version}"))
    assert resp.status_code == 404, resp.text
