"""Fuzz every service's REST API with auth on and a valid admin token: schemathesis generates cases from each
service's own OpenAPI schema (valid ones and ones that break it), and hand-written hostile bodies (10,000
levels of nesting, megabytes of data, a number of thousands of digits, a body past the size limit) go to
every operation that takes a body. Bad input must be a 4xx: not one response may be a 5xx, and every
service must still answer its health probe afterwards. The per-service summary goes to the terminal.

The fuzz calls destructive operations too (stage changes, rollbacks): the stack is this suite's own. It uses
an admin token of its own, so nothing it does can touch the token the rest of the suite relies on.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.schemas import APIOperation, BaseSchema

from mlops.settings import SERVICES
from tests.integration import toy_model
from tests.security.conftest import SecureStack

#: Generated cases per operation and generation mode: bounded so the whole file fits in a few minutes.
EXAMPLES_PER_MODE = 12
#: Probes that take no input and whose 503 means "not ready yet" by contract (Kubernetes, Open Inference).
PROBES = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/ready"})
DEPTH = 10_000
#: A fresh seed each run (more ground covered over time), printed with the summary; set
#: MLOPS_TEST_FUZZ_SEED to replay a run.
FUZZ_SEED = int(os.environ.get("MLOPS_TEST_FUZZ_SEED") or random.SystemRandom().getrandbits(64))
REQUEST_TIMEOUT_S = 60.0


@dataclass
class ServiceReport:
    """What the fuzz sent to one service and what came back."""

    service: str
    operations: int = 0
    cases: int = 0
    max_status: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)

    def record(self, label: str, status: int, detail: str = "") -> None:
        self.cases += 1
        self.max_status = max(self.max_status, status)
        self.statuses[status] += 1
        if status >= 500:
            self.server_errors.append(f"{label} -> {status} {detail}".strip())

    def line(self) -> str:
        return (f"{self.service:<14} operations={self.operations:<3} cases={self.cases:<5} "
                f"max_status={self.max_status} 5xx={len(self.server_errors)} seconds={self.seconds:.0f} "
                f"statuses={dict(sorted(self.statuses.items()))}")


def _load_schema(secure: SecureStack, service: str, headers: dict[str, str]) -> tuple[dict[str, Any], BaseSchema]:
    """The service's OpenAPI document as it serves it (auth on: only with a token), and schemathesis' view."""
    response = requests.get(secure.url(service, "/openapi.json"), headers=headers, timeout=REQUEST_TIMEOUT_S)
    response.raise_for_status()
    document = response.json()
    return document, schemathesis.openapi.from_dict(document).exclude(path=sorted(PROBES))


def _operations(schema: BaseSchema) -> Iterator[APIOperation]:
    for result in schema.get_all_operations():
        yield result.ok()


def _fuzz_operation(operation: APIOperation, mode: GenerationMode, *, base_url: str, headers: dict[str, str],
                    session: requests.Session, report: ServiceReport,
                    path_parameters: dict[str, str] | None = None) -> None:
    """Up to ``EXAMPLES_PER_MODE`` generated cases, each sent and checked by schemathesis' not_a_server_error;
    every outcome is recorded rather than raised, so one finding does not hide the next."""

    @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @seed(FUZZ_SEED)
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def send(case: Case) -> None:
        try:
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as exc:  # no answer at all: the worst kind of server error
            report.record(operation.label, 599, f"{type(exc).__name__}: {case.as_curl_command()}")
            return
        try:
            case.validate_response(response, checks=[not_a_server_error], headers=headers)
        except FailureGroup:  # recorded here: the next case may find another
            report.record(operation.label, response.status_code,
                          f"{mode.value}: {case.as_curl_command()} :: {response.text[:300]}")
            session.close()  # see _send
            return
        report.record(operation.label, response.status_code)

    try:
        send()
    except Unsatisfiable:  # nothing the caller sends can be made invalid (no body; any string is a valid path)
        assert mode is GenerationMode.NEGATIVE, operation.label


def _raw_operation(document: dict[str, Any], operation: APIOperation) -> dict[str, Any]:
    raw: dict[str, Any] = document["paths"][operation.path][operation.method.lower()]
    return raw


def _body_fields(document: dict[str, Any], operation: APIOperation) -> list[str]:
    """Top-level property names of an operation's JSON body, when its schema names them."""
    content = _raw_operation(document, operation).get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node.get(part, {})
        schema = node
    return sorted(schema.get("properties", {}))


def _query_names(document: dict[str, Any], operation: APIOperation) -> list[str]:
    return [p["name"] for p in _raw_operation(document, operation).get("parameters", []) if p.get("in") == "query"]


def _deep(depth: int = DEPTH) -> tuple[str, str]:
    """A list and an object nested ``depth`` levels, as JSON text (Python's own json could not write them)."""
    return "[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth


#: Values for every query and path parameter: naive and impossible times, numbers past any type, control and
#: non-BMP characters, traversal, a long string.
HOSTILE_VALUES: tuple[str, ...] = (
    "2020-01-01T00:00:00", "2020-13-45T99:99:99", "9" * 5000, "-" + "9" * 400, "1e309", "-1e309", "NaN", "-1",
    "0", "\x00", "\U0001f600\ud7ff", "../../../../etc/passwd", "%2e%2e%2f", "x" * 6000, " ", "",
)


def _hostile_bodies(fields: list[str]) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    """(what, body, extra headers): nesting, size and numbers at the top and in each named field, then the
    same kind of thing under the other content types and encodings a body may claim."""
    as_json = {"content-type": "application/json"}
    deep_list, deep_object = _deep()
    big_string = "x" * (4 * 1024 * 1024)
    yield "deep list", deep_list.encode(), as_json
    yield "deep object", deep_object.encode(), as_json
    yield "4 MiB string", json.dumps({"x": big_string}).encode(), as_json
    yield "200k-element list", json.dumps([0] * 200_000).encode(), as_json
    yield "5000-digit number", ('{"x": ' + "9" * 5000 + "}").encode(), as_json
    for name in fields:
        yield f"deep list in {name}", ('{"' + name + '":' + deep_list + "}").encode(), as_json
        yield f"deep object in {name}", ('{"' + name + '":' + deep_object + "}").encode(), as_json
        yield f"4 MiB {name}", json.dumps({name: big_string}).encode(), as_json
        yield f"5000-digit {name}", ('{"' + name + '":' + "9" * 5000 + "}").encode(), as_json
        yield f"1e999 {name}", ('{"' + name + '": 1e999}').encode(), as_json
        yield f"200k-element {name}", json.dumps({name: list(range(200_000))}).encode(), as_json
    yield "deep list as ndjson", (deep_list + "\n").encode(), {"content-type": "application/x-ndjson"}
    yield "deep object as text", deep_object.encode(), {"content-type": "text/plain"}
    yield "not gzip", b"\x1f\x8bnot gzip at all", {**as_json, "content-encoding": "gzip"}
    yield "unknown encoding", b"{}", {**as_json, "content-encoding": "br, zstd, x-unknown"}
    yield "not UTF-8", b'{"x": "\xff\xfe"}', as_json
    yield "form", b"a=1&b=%ff", {"content-type": "application/x-www-form-urlencoded"}


#: Raw JSON put in place of one value of a valid body at a time: numbers JSON cannot hold or no type fits,
#: a lone surrogate (valid JSON, not encodable as UTF-8), NUL, times without an offset or past year 9999,
#: a 100k-character string, and values of the wrong kind.
HOSTILE_LEAVES: tuple[str, ...] = (
    "NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, "-" + "9" * 30, str(2**64), "-1", "0.5", "true", "null",
    '""',
    '"' + "x" * 100_000 + '"', '"2020-01-01T00:00:00"', '"99999-01-01T00:00:00Z"', '"\\u0000"', '"\\ud800"',
    "{}", "[]", "[[[]]]",
)
_LEAF = "\u2063fuzz-leaf\u2063"


def _valid_bodies(known: dict[str, str]) -> dict[tuple[str, str], Any]:
    """A body each operation accepts (or nearly: what matters is that it gets past the parsing), naming the
    seeded things; :func:`_mutations` breaks one value of it at a time. The training job names a stream that
    does not exist: a real job would train for as long as the fuzz asks (epochs are unbounded)."""
    model, version, stream = known["model"], known["version"], known["stream"]
    infer = {"id": "fuzz", "parameters": {"fuzz": 1},
             "inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 0.25]}],
             "outputs": [{"name": "output"}]}
    return {
        ("POST", "/v1/streams/{stream}/events"): [
            {"event_id": "fuzz-1", "entity_id": "e1", "event_time": "2026-01-01T00:00:00Z", "a": 0.5, "b": 1.0}],
        ("PUT", "/v1/streams/{stream}/schema"): {
            "entity_field": "entity_id", "time_field": "event_time", "dedup_window_s": 60,
            "fields": [{"name": "a", "type": "float", "min": 0, "max": 10, "required": True},
                       {"name": "b", "type": "string", "enum": ["x"], "pii": "redact"}]},
        ("POST", "/v1/features/online"): {"entities": ["e1"], "features": ["a"], "as_of": "2026-01-01T00:00:00Z"},
        ("POST", "/v1/datasets"): {"stream": stream, "features": ["a"], "label": "b", "last_n": 5,
                                   "start": "2020-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"},
        ("POST", "/v1/training-jobs"): {"model": model, "stream": "fuzz-no-such-stream", "features": ["a"],
                                        "label": "b", "stage": "candidate", "epochs": 1, "seed": 1,
                                        "recent_rows": 10, "fairness_max_gap": 0.1, "processes": 1},
        ("POST", "/v2/models/{name}/infer"): infer,
        ("POST", "/v2/models/{name}/versions/{version}/infer"): infer,
        ("POST", "/v1/feedback"): [{"prediction_id": known["prediction_id"], "label": 1, "reward": 0.5,
                                    "value": 2.0}],
        ("PUT", "/v1/endpoints/{endpoint}"): {
            "variants": [{"model": model, "version": version, "weight": 1.0, "name": "a"},
                         {"model": model, "alias": "production", "weight": 0.5, "name": "b"}],
            "policy": {"type": "epsilon_greedy", "params": {"epsilon": 0.1}}},
        ("POST", "/v1/endpoints/{endpoint}/predict"): {"unit_id": "u1", "entity_id": "e1",
                                                       "features": {"a": 0.5, "b": 0.25}},
        ("POST", "/v1/models/{name}/versions/{version}/stage"): {"stage": "production", "reason": "fuzz",
                                                                  "force": False},
        ("POST", "/v1/models/{name}/rollback"): {"reason": "fuzz"},
        ("POST", "/v1/runs"): {"experiment": "fuzz", "key": "k", "params": {"p": "1"}, "seed": 1,
                               "git_dirty": False},
        ("PATCH", "/v1/runs/{run_id}"): {
            "status": "running", "reason": "fuzz", "params": {"p": "1"}, "tags": {"t": "1"},
            "metrics": {"m": 0.5},
            "gates": [{"name": "g", "passed": True, "reason": "", "details": {"x": 1}, "skipped": False}]},
        ("POST", "/v1/runs/{run_id}/metrics"): {"metrics": [{"key": "loss", "value": 0.5, "step": 1,
                                                            "time": 1_700_000_000}]},
    }


def _leaves(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every value in a JSON document (containers included, the document itself not)."""
    if at:
        yield at
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*at, index))


def _replaced(value: Any, at: tuple[Any, ...]) -> Any:
    if not at:
        return _LEAF
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[at[0]] = _replaced(value[at[0]], at[1:])
    return copy


def _mutations(body: Any) -> Iterator[tuple[str, bytes]]:
    """The valid ``body`` with one of its values at a time replaced by each :data:`HOSTILE_LEAVES`."""
    for at in _leaves(body):
        text = json.dumps(_replaced(body, at))
        for leaf in HOSTILE_LEAVES:
            yield f"{'.'.join(map(str, at))}={leaf[:12]}", text.replace(json.dumps(_LEAF), leaf).encode()


def _send_mutations(operation: APIOperation, known: dict[str, str], *, base_url: str, headers: dict[str, str],
                    session: requests.Session, report: ServiceReport) -> None:
    body = _valid_bodies(known).get((operation.method.upper(), operation.path))
    if body is None:
        return
    url = base_url + _path(operation, known)
    send_headers = {**headers, "content-type": "application/json"}
    _send(session, report, f"{operation.label} [valid body]", operation.method.upper(), url,
          data=json.dumps(body).encode(), headers=send_headers)
    for what, data in _mutations(body):
        _send(session, report, f"{operation.label} [{what}]", operation.method.upper(), url, data=data,
              headers=send_headers)


def _path(operation: APIOperation, known: dict[str, str], override: tuple[str, str] | None = None) -> str:
    """The operation's path with each parameter naming a thing that exists (``"fuzz"`` where none does), or
    ``override`` = (parameter, value) in place of one of them."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        raw = override[1] if override and override[0] == name else known.get(name, "fuzz")
        return quote(raw, safe="")

    return re.sub(r"{(\w+)}", value, operation.path)


def _send(session: requests.Session, report: ServiceReport, label: str, method: str, url: str,
          **kwargs: Any) -> None:
    try:
        response = session.request(method, url, timeout=REQUEST_TIMEOUT_S, **kwargs)
    except requests.RequestException as exc:  # no answer at all: the worst kind of server error
        report.record(label, 599, type(exc).__name__)
        return
    report.record(label, response.status_code, response.text[:300])
    if response.status_code >= 500:
        session.close()  # the server drops a connection after an unhandled error: the next case gets a new one


def _send_hostile(document: dict[str, Any], operation: APIOperation, known: dict[str, str], *, base_url: str,
                  headers: dict[str, str], session: requests.Session, report: ServiceReport) -> None:
    """Hand-written cases: hostile bodies, then every hostile value in each query and path parameter."""
    method = operation.method.upper()
    url = base_url + _path(operation, known)
    if method in ("POST", "PUT", "PATCH"):
        for what, body, extra in _hostile_bodies(_body_fields(document, operation)):
            _send(session, report, f"{operation.label} [{what}]", method, url, data=body,
                  headers={**headers, **extra})
    body = {"data": b"{}", "headers": {**headers, "content-type": "application/json"}} if method != "GET" else {
        "headers": headers}
    for name in _query_names(document, operation):
        for value in HOSTILE_VALUES:
            _send(session, report, f"{operation.label} [?{name}={value[:20]!r}]", method, url,
                  params={name: value}, **body)
    for name in re.findall(r"{(\w+)}", operation.path):
        for value in HOSTILE_VALUES:
            if value in ("", " "):
                continue  # an empty segment is another route
            _send(session, report, f"{operation.label} [{{{name}}}={value[:20]!r}]", method,
                  base_url + _path(operation, known, (name, value)), **body)


def _past_the_limit(operation: APIOperation, known: dict[str, str], *, base_url: str, headers: dict[str, str],
                    session: requests.Session, report: ServiceReport) -> None:
    body = b"[" + b"0," * (17 * 1024 * 1024) + b"0]"  # 34 MiB: past the platform's 32 MiB
    _send(session, report, f"{operation.label} [past the body limit]", operation.method.upper(),
          base_url + _path(operation, known), data=body, headers={**headers, "content-type": "application/json"})


def _seed(secure: SecureStack, headers: dict[str, str]) -> dict[str, str]:
    """Things for path parameters to name, so generated cases reach past "not found": a served production
    model, a stream with a schema and events, an experiment run, a router endpoint."""
    tag = uuid.uuid4().hex[:6]
    model, stream, endpoint = f"fuzz-model-{tag}", f"fuzz-stream-{tag}", f"fuzz-endpoint-{tag}"
    version = toy_model.register(secure.grpc("registry"), model, ["a", "b"],
                                 metadata=(("authorization", headers["authorization"]),)).version
    with requests.Session() as http:
        http.headers.update(headers)
        fields = [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}]
        put = http.put(secure.url("ingest", f"/v1/streams/{stream}/schema"), json={"fields": fields}, timeout=30)
        assert put.status_code == 200, put.text
        events = [{"entity_id": f"e{i}", "a": i / 10, "b": 1.0} for i in range(20)]
        posted = http.post(secure.url("ingest", f"/v1/streams/{stream}/events"), json=events, timeout=30)
        assert posted.status_code == 202, posted.text
        run = http.post(secure.url("registry", "/v1/runs"), json={"experiment": f"fuzz-{tag}"}, timeout=30)
        assert run.status_code == 201, run.text
        routed = http.put(secure.url("bandit-router", f"/v1/endpoints/{endpoint}"),
                          json={"variants": [{"model": model, "version": version}]}, timeout=30)
        assert routed.status_code == 200, routed.text
        # A prediction for feedback to name (the router may not reach the model yet: then an id of no one's).
        predicted = http.post(secure.url("bandit-router", f"/v1/endpoints/{endpoint}/predict"),
                              json={"unit_id": "u1", "features": {"a": 0.5, "b": 0.25}}, timeout=30)
        prediction_id = predicted.json()["prediction_id"] if predicted.status_code == 200 else "fuzz-prediction"
    return {"prediction_id": prediction_id, "name": model, "model": model, "version": str(version),
            "stream": stream, "endpoint": endpoint,
            "run_id": str(run.json()["id"]), "alias": "production"}


def _healthy(secure: SecureStack, service: str) -> bool:
    try:
        return requests.get(secure.url(service, "/healthz"), timeout=10).status_code == 200
    except requests.RequestException:
        return False


# The suite's stack starts (a minute or two) within the first test that asks for it: this may be that one.
@pytest.mark.timeout(600)
def test_no_input_gives_a_server_error(secure: SecureStack, capsys: pytest.CaptureFixture[str]) -> None:
    # A second admin token: whatever the fuzz changes, the suite's own admin token stays as it was.
    headers = {"authorization": f"Bearer {secure.token('admin')}"}
    known = _seed(secure, headers)
    reports = []
    with requests.Session() as session:
        # The registry last: its fuzz changes stages and rolls back, and the others serve the seeded model.
        for service in sorted(SERVICES, key=lambda name: name == "registry"):
            report = ServiceReport(service)
            reports.append(report)
            started = time.monotonic()
            document, schema = _load_schema(secure, service, headers)
            base_url = secure.url(service)
            over_limit_sent = False
            for operation in _operations(schema):
                report.operations += 1
                seeded = {p: known[p] for p in re.findall(r"{(\w+)}", operation.path) if p in known}
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    _fuzz_operation(operation, mode, base_url=base_url, headers=headers, session=session,
                                    report=report)
                    if seeded:  # the same again, with the path naming things that exist
                        _fuzz_operation(operation, mode, base_url=base_url, headers=headers, session=session,
                                        report=report, path_parameters=seeded)
                _send_hostile(document, operation, known, base_url=base_url, headers=headers, session=session,
                              report=report)
                _send_mutations(operation, known, base_url=base_url, headers=headers, session=session,
                                report=report)
                if operation.method.upper() in ("POST", "PUT", "PATCH") and not over_limit_sent:
                    _past_the_limit(operation, known, base_url=base_url, headers=headers, session=session,
                                    report=report)
                    over_limit_sent = True
            report.seconds = time.monotonic() - started
    unhealthy = [service for service in SERVICES if not _healthy(secure, service)]
    title = f"fuzz (auth on, admin token, MLOPS_TEST_FUZZ_SEED={FUZZ_SEED}):"
    summary = "\n".join([title, *(r.line() for r in reports)])
    findings = [f"  {r.service}: {error}" for r in reports for error in r.server_errors]
    with capsys.disabled():
        print("\n" + summary + ("\n" + "\n".join(findings) if findings else ""))
    assert all(r.cases > 0 for r in reports), summary
    assert not findings, summary + "\n" + "\n".join(findings)
    assert not unhealthy, f"unhealthy after the fuzz: {unhealthy}"
