"""Least privilege per service. Every process of the stack (each service and whatever it started) is read
from ``/proc/<pid>/environ``: a service that calls peers holds only its own token, of the least role its
calls need (``mlops.auth.policy.SERVICE_ROLES``), never admin; the others hold none; no process holds the
admin token or the old shared ``service.token``. A stolen service token cannot change what serves. And the
stack still works with these tokens: inference loads from the registry, the router predicts through
inference and may promote, the console reads the registry, the router and drift, the trainer builds a
dataset, tracks a run and registers a candidate."""

from __future__ import annotations

import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from mlops.auth.policy import ROLE_PERMISSIONS, SERVICE_ROLES
from mlops.auth.tokens import TokenStore
from mlops.settings import SERVICES
from mlops.v1 import registry_pb2, registry_pb2_grpc
from tests.integration import toy_model
from tests.security import support
from tests.security.conftest import SecureStack


def _environ(pid: int) -> dict[str, str]:
    # The platform runs on Linux (the embedded stack's binaries and scripts/bootstrap are Linux-only): a
    # missing /proc is a broken set-up, not a reason to skip what these tests prove.
    assert Path("/proc/self/environ").exists(), "these checks read /proc/<pid>/environ (Linux)"
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _group(pgid: int) -> list[int]:
    """Every live process in the process group a service leads (it and whatever it started)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # after the command: state, ppid, pgrp
            pids.append(int(stat.parent.name))
    return pids


@pytest.fixture(scope="module")
def service_envs(secure: SecureStack) -> dict[str, list[dict[str, str]]]:
    """Each service's processes' environments, from the stack's state file: the service first, then what
    it started (a model inspection worker, say)."""
    state = json.loads((secure.home / "run" / "stack.json").read_text())
    assert "MLOPS_SERVICE_TOKEN" not in state["env"], "the state file holds a service token"
    out: dict[str, list[dict[str, str]]] = {}
    for proc in state["procs"]:
        if proc.get("kind", "service") == "service":
            children = [pid for pid in _group(proc["pid"]) if pid != proc["pid"]]
            out[proc["name"]] = [_environ(pid) for pid in [proc["pid"], *children]]
    assert set(out) == set(SERVICES), out.keys()
    return out


def _store(secure: SecureStack) -> TokenStore:
    return TokenStore(secure.home / "auth" / "tokens.json")


def service_token(envs: dict[str, list[dict[str, str]]], service: str) -> str:
    token = envs[service][0].get("MLOPS_SERVICE_TOKEN")
    assert token, f"{service} has no token of its own"
    return token


def test_each_service_holds_only_its_own_token_with_its_least_role(
    secure: SecureStack, service_envs: dict[str, list[dict[str, str]]]
) -> None:
    store = _store(secure)
    seen: dict[str, str] = {}
    for service, envs in service_envs.items():
        own = envs[0].get("MLOPS_SERVICE_TOKEN")
        for i, env in enumerate(envs):
            assert "MLOPS_TOKEN" not in env, service
            assert secure.admin not in env.values(), f"a process of {service} holds the admin token"
            token = env.get("MLOPS_SERVICE_TOKEN")
            if service not in SERVICE_ROLES:
                assert token is None, f"{service} calls no peer but holds a token"
                continue
            if i > 0:  # what a service starts holds its token or none (the inspection worker gets none)
                assert token in (None, own), f"a process of {service} holds another token"
                continue
            assert token, f"{service} has no token of its own"
            principal = store.verify(token)
            assert principal is not None, f"{service}'s token is not valid"
            assert principal.role == SERVICE_ROLES[service] and principal.role != "admin", (service, principal)
            assert "admin" not in ROLE_PERMISSIONS[principal.role] and "tokens" not in ROLE_PERMISSIONS[principal.role]
            seen.setdefault(token, service)
            assert seen[token] == service, f"{service} and {seen[token]} share a token"


def test_the_shared_admin_service_token_is_gone(secure: SecureStack) -> None:
    assert not (secure.home / "auth" / "service.token").exists()
    active = [r for r in _store(secure).list() if not r.revoked_at]
    assert not [r for r in active if r.name == "platform-services"]
    assert {r.name for r in active if r.role == "admin" and not r.name.startswith("sec-")} == {"local-admin"}
    for path in (secure.home / "auth" / "services").iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"


@pytest.mark.parametrize("service", ["inference", "drift", "registry", "trainer"])
def test_a_stolen_service_token_cannot_change_what_serves(
    secure: SecureStack, service_envs: dict[str, list[dict[str, str]]], service: str
) -> None:
    """The issue's escalation: a model that read the inference token could declare endpoints and promote."""
    token = service_token(service_envs, service)
    model = support.new_model(f"stolen-{service}")
    version = support.register(secure, "admin", model, stage="candidate").version
    bearer = {"authorization": f"Bearer {token}"}
    with httpx.Client(timeout=30, headers=bearer) as http:
        r = http.put(secure.url("bandit-router", f"/v1/endpoints/stolen-{service}"),
                     json={"variants": [{"name": "a", "model": model, "weight": 1.0}], "policy": {"type": "fixed"}})
        assert r.status_code == 403, (service, r.status_code, r.text)
        for stage in ("production", "archived"):
            r = http.post(secure.url("registry", f"/v1/models/{model}/versions/{version}/stage"),
                          json={"stage": stage, "reason": "stolen token"})
            assert r.status_code == 403, (service, stage, r.status_code)
        assert http.post(secure.url("registry", f"/v1/models/{model}/rollback"),
                         json={"reason": "stolen token"}).status_code == 403
    with grpc.insecure_channel(secure.grpc("registry")) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        code, _ = support.refused_code(lambda: stub.SetStage(registry_pb2.SetStageRequest(
            model=model, version=version, stage="production"), metadata=(("authorization", f"Bearer {token}"),),
            timeout=30))
        assert code == grpc.StatusCode.PERMISSION_DENIED, (service, code)
        code, _ = support.refused_code(lambda: stub.RegisterModelVersion(
            support.register_request(model, toy_model.torchscript_bytes(2), "production"),
            metadata=(("authorization", f"Bearer {token}"),), timeout=60))
        assert code == grpc.StatusCode.PERMISSION_DENIED, (service, code)
    assert support.version_stage(secure, model, version) == "candidate"


def test_the_router_token_may_promote_but_not_declare_endpoints_or_register(
    secure: SecureStack, service_envs: dict[str, list[dict[str, str]]]
) -> None:
    token = service_token(service_envs, "bandit-router")
    bearer = (("authorization", f"Bearer {token}"),)
    model = support.new_model("router-token")
    version = support.register(secure, "admin", model, stage="candidate").version
    with httpx.Client(timeout=30, headers={"authorization": f"Bearer {token}"}) as http:
        r = http.put(secure.url("bandit-router", "/v1/endpoints/router-token"),
                     json={"variants": [{"name": "a", "model": model, "weight": 1.0}], "policy": {"type": "fixed"}})
        assert r.status_code == 403, r.text
    with grpc.insecure_channel(secure.grpc("registry")) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        code, _ = support.refused_code(lambda: stub.RegisterModelVersion(
            support.register_request(model, toy_model.torchscript_bytes(2)), metadata=bearer, timeout=60))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        promoted = stub.SetStage(registry_pb2.SetStageRequest(model=model, version=version, stage="production",
                                                              reason="experiment concluded"),
                                 metadata=bearer, timeout=30)
    assert promoted.stage == "production"


def _wait(what: str, check: Any, timeout_s: float = 180.0) -> Any:
    """Wait for an event of the stack (a model loaded, a job finished); not a speed check."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what} never happened (last: {last!r})")


def test_serving_and_the_console_work_with_least_privilege(secure: SecureStack) -> None:
    """Inference loads a production model from the registry with its reader token; the router predicts
    through inference with its own; the console reads the registry, the router and drift with its own."""
    model = support.new_model("lp-serve")
    support.register(secure, "admin", model, stage="production")
    endpoint = f"lp-{uuid.uuid4().hex[:6]}"
    with secure.http("admin") as admin:
        r = admin.put(secure.url("bandit-router", f"/v1/endpoints/{endpoint}"),
                      json={"variants": [{"name": "only", "model": model, "alias": "production", "weight": 1.0}],
                            "policy": {"type": "fixed"}})
        assert r.status_code == 200, r.text
    with secure.http("predictor") as http:
        _wait("inference loaded the model",
              lambda: http.get(secure.url("inference", f"/v2/models/{model}/ready")).status_code == 200)
        r = http.post(secure.url("bandit-router", f"/v1/endpoints/{endpoint}/predict"),
                      json={"unit_id": "lp-user", "features": {"a": 0.5, "b": -0.5}})
        assert r.status_code == 200, r.text
        version = str(r.json()["version"])
    with secure.http("viewer") as http:
        # drift reads the version's reference from the registry with its own token to count predictions
        _wait("drift to count the prediction", lambda: (lambda r: r.status_code == 200 and r.json().get(
            "predictions", 0) >= 1)(http.get(secure.url("drift", f"/v1/drift/{model}/{version}"))))
        # The console's pages read the registry, the router and drift with the registry's own token; a peer
        # that refused it would show as "<service> answered 403" on the page.
        for path, needle in (("/ui", endpoint), ("/ui/models", model), ("/ui/endpoints", endpoint),
                             ("/ui/drift", "Drift")):
            page = http.get(secure.url("registry", path))
            assert page.status_code == 200 and needle in page.text, (path, page.status_code)
            assert "answered 40" not in page.text, (path, "a console read was refused")


def test_the_trainer_registers_a_candidate_on_behalf_of_the_requester(secure: SecureStack) -> None:
    """A scientist's job: the trainer builds the dataset (train), tracks the run and registers (register)
    with its own token, at candidate; the audit trail names the trainer's token and the requester."""
    run = uuid.uuid4().hex[:8]
    stream, model = f"lp{run}", f"lp-train-{run}"
    rng = random.Random(5)
    events = []
    for i in range(300):
        x1, x2 = rng.uniform(-1, 1), rng.uniform(-1, 1)
        events.append({"event_id": f"{run}-{i}", "entity_id": f"{run}-u{i}", "x1": x1, "x2": x2,
                       "label": int(x1 + x2 > 0)})
    with secure.http("scientist", timeout=60) as http:
        r = http.put(secure.url("ingest", f"/v1/streams/{stream}/schema"), json={"fields": [
            {"name": "x1", "type": "float"}, {"name": "x2", "type": "float"},
            {"name": "label", "type": "int", "min": 0, "max": 1}]})
        assert r.status_code == 200, r.text
    with secure.http("producer", timeout=60) as http:
        r = http.post(secure.url("ingest", f"/v1/streams/{stream}/events"), json=events)
        assert r.status_code == 202, r.text
    with secure.http("scientist", timeout=60) as http:
        _wait("every event in the offline store", lambda: (lambda r: r.status_code == 201 and r.json()["rows"] == 300)(
            http.post(secure.url("feature", "/v1/datasets"), json={"stream": stream, "features": ["x1", "x2"],
                                                                   "label": "label"})))
        r = http.post(secure.url("trainer", "/v1/training-jobs"),
                      json={"model": model, "stream": stream, "features": ["x1", "x2"], "label": "label",
                            "epochs": 5, "seed": 1, "reason": "least privilege"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        job = _wait(f"training job {job_id}", lambda: (lambda j: j if j["state"] in ("succeeded", "failed") else None)(
            http.get(secure.url("trainer", f"/v1/training-jobs/{job_id}")).json()), timeout_s=300)
    assert job["state"] == "succeeded", job
    versions = httpx.get(secure.url("registry", f"/v1/models/{model}/versions"), headers=secure.headers("viewer"),
                         timeout=30).json()
    assert [v["stage"] for v in versions["versions"]] == ["candidate"], versions
    trainer_id = next(r.id for r in _store(secure).list() if r.name == "svc-trainer" and not r.revoked_at)
    entries = support.audit_entries(secure, lambda e: bool(e), actor_id=trainer_id, target=model)
    assert entries[0]["on_behalf_of"] == secure.token_id("scientist"), entries[0]


def test_a_job_above_candidate_is_refused_when_submitted_not_after_training(secure: SecureStack) -> None:
    """The trainer registers at candidate only (its own role); even an admin's job asking for more is told
    at once to train at candidate and promote, instead of training for minutes and failing to register."""
    with secure.http("admin") as http:
        for stage in ("shadow", "production", "Archived"):
            r = http.post(secure.url("trainer", "/v1/training-jobs"),
                          json={"model": "lp-stage", "stream": "s", "features": ["a"], "label": "b", "stage": stage})
            assert r.status_code == 400, (stage, r.status_code, r.text)
            assert r.json()["error"]["field"] == "stage" and "train at candidate" in r.text, r.text
