"""Auth on a stack of its own (as `mlops up` starts it by default): every mutating REST and gRPC method
refuses a missing token and too weak a role; a viewer reads; a revoked token stops working at once;
state changes land in the audit trail with their actor; health and metrics stay open."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from mlops.auth.tokens import TokenStore
from mlops.settings import SERVICES, env_name
from tests.integration import toy_model
from tests.integration.stack import PORT_BASE, stack_env

pytestmark = pytest.mark.integration

BASE = PORT_BASE + 600
RATE_LIMIT = 40  # requests per second per token on this stack
HTTP = {s: BASE + 1 + i for i, s in enumerate(SERVICES)}
GRPC = {s: BASE + 11 + i for i, s in enumerate(SERVICES)}

MUTATING_REST = [
    ("ingest", "POST", "/v1/streams/s/events", [{"entity_id": "a"}]),
    ("ingest", "PUT", "/v1/streams/s/schema", {"fields": []}),
    ("feature", "POST", "/v1/datasets", {"stream": "s", "features": ["a"], "label": "b"}),
    ("trainer", "POST", "/v1/training-jobs", {"model": "m", "stream": "s", "features": ["a"], "label": "b"}),
    ("registry", "POST", "/v1/models/m/versions/1/stage", {"stage": "candidate", "reason": "r"}),
    ("registry", "POST", "/v1/models/m/rollback", {"reason": "r"}),
    ("registry", "POST", "/v1/runs", {"experiment": "e"}),
    ("inference", "POST", "/v2/models/m/infer", {"inputs": []}),
    ("bandit-router", "PUT", "/v1/endpoints/e", {"variants": [], "policy": {"type": "fixed"}}),
    ("bandit-router", "POST", "/v1/endpoints/e/predict", {"features": {}}),
    ("feedback", "POST", "/v1/feedback", {"prediction_id": "p", "label": 1}),
]
MUTATING_GRPC = [
    ("ingest", "/mlops.v1.IngestService/SendEvents", False),
    ("ingest", "/mlops.v1.IngestService/StreamEvents", True),
    ("ingest", "/mlops.v1.IngestService/PutSchema", False),
    ("feature", "/mlops.v1.FeatureService/BuildDataset", False),
    ("trainer", "/mlops.v1.TrainerService/SubmitJob", False),
    ("registry", "/mlops.v1.RegistryService/RegisterModelVersion", False),
    ("registry", "/mlops.v1.RegistryService/SetStage", False),
    ("registry", "/mlops.v1.RegistryService/Rollback", False),
    ("inference", "/inference.GRPCInferenceService/ModelInfer", False),
    ("bandit-router", "/mlops.v1.BanditRouterService/PutEndpoint", False),
    ("bandit-router", "/mlops.v1.BanditRouterService/Predict", False),
    ("feedback", "/mlops.v1.FeedbackService/SendFeedback", False),
]


class AuthStack:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env = home, env
        self.admin = (home / "auth" / "admin.token").read_text().strip()
        self.tokens = TokenStore(home / "auth" / "tokens.json")

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{HTTP[service]}{path}"

    def token(self, role: str) -> tuple[str, str]:
        record, token = self.tokens.create(f"test-{role}-{uuid.uuid4().hex[:6]}", role)
        return record.id, token


@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    home = tmp_path_factory.mktemp("auth-home")
    env = stack_env(home)
    env.update({"MLOPS_AUTH_ENABLED": "true", "MLOPS_RATE_LIMIT_PER_S": str(RATE_LIMIT),
                "MLOPS_EMBEDDED_KAFKA_PORT": str(BASE + 92),
                "MLOPS_EMBEDDED_REDIS_PORT": str(BASE + 79)})
    for service in SERVICES:
        env[f"MLOPS_{env_name(service)}_HTTP_PORT"] = str(HTTP[service])
        env[f"MLOPS_{env_name(service)}_GRPC_PORT"] = str(GRPC[service])
    cli = [sys.executable, "-m", "mlops.cli.main"]
    up = subprocess.run([*cli, "up"], env=env, text=True, capture_output=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "admin token" in up.stdout
        yield AuthStack(home, env)
    finally:
        subprocess.run([*cli, "down"], env=env, capture_output=True, timeout=180)


def _rest(stack: AuthStack, service: str, method: str, path: str, body: object, token: str | None) -> int:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, stack.url(service, path), json=body, headers=headers, timeout=30).status_code


def _grpc(stack: AuthStack, service: str, method: str, streaming: bool, token: str | None) -> grpc.StatusCode:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(f"127.0.0.1:{GRPC[service]}") as channel:
        try:
            if streaming:
                channel.stream_unary(method)(iter([b""]), metadata=metadata, timeout=10)
            else:
                channel.unary_unary(method)(b"", metadata=metadata, timeout=10)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def test_health_and_metrics_stay_open(auth_stack: AuthStack) -> None:
    for service in SERVICES:
        for path in ("/healthz", "/metrics"):
            assert _rest(auth_stack, service, "GET", path, None, None) == 200, (service, path)


@pytest.mark.parametrize(("service", "method", "path", "body"), MUTATING_REST, ids=lambda v: str(v)[:40])
def test_rest_refuses_missing_token_and_weak_role(auth_stack: AuthStack, service: str, method: str, path: str,
                                                  body: object) -> None:
    _, viewer = auth_stack.token("viewer")
    assert _rest(auth_stack, service, method, path, body, None) == 401
    assert _rest(auth_stack, service, method, path, body, "mlops_nope_nope") == 401
    assert _rest(auth_stack, service, method, path, body, viewer) == 403


@pytest.mark.parametrize(("service", "method", "streaming"), MUTATING_GRPC, ids=lambda v: str(v)[:50])
def test_grpc_refuses_missing_token_and_weak_role(auth_stack: AuthStack, service: str, method: str,
                                                  streaming: bool) -> None:
    _, viewer = auth_stack.token("viewer")
    assert _grpc(auth_stack, service, method, streaming, None) == grpc.StatusCode.UNAUTHENTICATED
    assert _grpc(auth_stack, service, method, streaming, viewer) == grpc.StatusCode.PERMISSION_DENIED


def test_server_streaming_methods_check_tokens_too(auth_stack: AuthStack) -> None:
    _, viewer = auth_stack.token("viewer")
    for token, want in ((None, grpc.StatusCode.UNAUTHENTICATED), (viewer, grpc.StatusCode.NOT_FOUND)):
        metadata = [("authorization", f"Bearer {token}")] if token else []
        with grpc.insecure_channel(f"127.0.0.1:{GRPC['feature']}") as channel:
            call = channel.unary_stream("/mlops.v1.FeatureService/ReadDataset")(b"\n\x01x", metadata=metadata,
                                                                                 timeout=10)
            with pytest.raises(grpc.RpcError) as err:
                list(call)
        assert err.value.code() == want, (token, err.value.details())


def test_roles_between_viewer_and_admin(auth_stack: AuthStack) -> None:
    _, predictor = auth_stack.token("predictor")
    _, scientist = auth_stack.token("scientist")
    # A predictor may send feedback but not declare endpoints; a scientist may stage to candidate, not production.
    assert _rest(auth_stack, "feedback", "POST", "/v1/feedback", {"prediction_id": "p", "label": 1}, predictor) == 202
    assert _rest(auth_stack, "bandit-router", "PUT", "/v1/endpoints/e",
                 {"variants": [], "policy": {"type": "fixed"}}, predictor) == 403
    assert _rest(auth_stack, "registry", "POST", "/v1/models/m/versions/1/stage",
                 {"stage": "production", "reason": "r"}, scientist) == 403
    assert _rest(auth_stack, "registry", "POST", "/v1/models/m/versions/1/stage",
                 {"stage": "candidate", "reason": "r"}, scientist) == 404  # allowed; the model does not exist


def test_a_token_beyond_its_rate_gets_429_and_others_are_unaffected(auth_stack: AuthStack) -> None:
    _, busy = auth_stack.token("viewer")
    _, calm = auth_stack.token("viewer")
    with httpx.Client(timeout=10, headers={"authorization": f"Bearer {busy}"}) as http:
        codes = [http.get(auth_stack.url("registry", "/v1/models")).status_code for _ in range(6 * RATE_LIMIT)]
    assert 429 in codes and 200 in codes, codes
    assert _rest(auth_stack, "registry", "GET", "/v1/models", None, calm) == 200


def test_viewer_reads_and_revocation_is_immediate(auth_stack: AuthStack) -> None:
    token_id, viewer = auth_stack.token("viewer")
    assert _rest(auth_stack, "registry", "GET", "/v1/models", None, viewer) == 200
    assert _rest(auth_stack, "registry", "GET", "/v1/models", None, None) == 401
    assert _grpc(auth_stack, "registry", "/mlops.v1.RegistryService/ListModelVersions", False, viewer) == \
        grpc.StatusCode.OK
    auth_stack.tokens.revoke(token_id)
    assert _rest(auth_stack, "registry", "GET", "/v1/models", None, viewer) == 401
    assert _grpc(auth_stack, "registry", "/mlops.v1.RegistryService/ListModelVersions", False, viewer) == \
        grpc.StatusCode.UNAUTHENTICATED


def test_state_changes_are_audited_with_their_actor(auth_stack: AuthStack) -> None:
    run = uuid.uuid4().hex[:8]
    stream, model = f"aud{run}", f"aud-{run}"
    admin = auth_stack.admin
    assert _rest(auth_stack, "ingest", "PUT", f"/v1/streams/{stream}/schema",
                 {"fields": [{"name": "a", "type": "float"}]}, admin) == 200
    with grpc.insecure_channel(f"127.0.0.1:{GRPC['registry']}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
    metadata = (("authorization", f"Bearer {admin}"),)
    version = toy_model.register(f"127.0.0.1:{GRPC['registry']}", model, ["a", "b"], stage="candidate",
                                 metadata=metadata).version
    assert _rest(auth_stack, "registry", "POST", f"/v1/models/{model}/versions/{version}/stage",
                 {"stage": "production", "reason": "audit test promotion"}, admin) == 200
    subprocess.run([sys.executable, "-m", "mlops.cli.main", "tokens", "create", f"ci-{run}", "--role", "viewer"],
                   env=auth_stack.env, capture_output=True, timeout=60, check=True)

    want = {f"/v1/streams/{stream}/schema", f"/v1/models/{model}/versions/{version}/stage"}
    entries: list[dict] = []
    for _ in range(120):
        r = httpx.get(auth_stack.url("registry", "/v1/audit?limit=500"), headers={"authorization": f"Bearer {admin}"})
        entries = r.json()["entries"]
        targets = {e["target"] for e in entries}
        if want <= targets and any(e["action"] == "tokens.create" for e in entries):
            break
        time.sleep(0.25)
    by_target = {e["target"]: e for e in entries}
    assert want <= set(by_target), json.dumps(entries, indent=1)[:2000]
    assert by_target[f"/v1/models/{model}/versions/{version}/stage"]["actor"] == "local-admin"
    assert by_target[f"/v1/models/{model}/versions/{version}/stage"]["reason"] == "audit test promotion"
    assert any(e["action"] == "/mlops.v1.RegistryService/RegisterModelVersion" and e["actor"] == "local-admin"
               for e in entries)
    assert any(e["action"] == "tokens.create" and e["actor"].startswith("cli:") for e in entries)
