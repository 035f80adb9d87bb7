"""Every gRPC method of every service, of every kind (unary, client-streaming, server-streaming,
bidirectional), found from the services' own descriptors so a method added later is attacked too:
anonymous, with a forged token and with a revoked one it is UNAUTHENTICATED (health and liveness
excepted); with a role that lacks its permission it is PERMISSION_DENIED. The issue's case: the
bidirectional ``ModelStreamInfer`` answered anonymous callers UNIMPLEMENTED, past the auth wrapper."""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from tritonclient.grpc import service_pb2

import mlops.v1
from mlops.auth import policy
from mlops.auth.tokens import TokenStore
from tests.security import support
from tests.security.conftest import SecureStack

#: The service that serves each gRPC service (mlops.v1 and the V2 inference protocol).
SERVES = {
    "mlops.v1.IngestService": "ingest", "mlops.v1.FeatureService": "feature", "mlops.v1.TrainerService": "trainer",
    "mlops.v1.RegistryService": "registry", "mlops.v1.InferenceAdmin": "inference",
    "inference.GRPCInferenceService": "inference", "mlops.v1.FeedbackService": "feedback",
    "mlops.v1.DriftService": "drift", "mlops.v1.BanditRouterService": "bandit-router",
}
ROLES = ("viewer", "producer", "predictor", "scientist")


@dataclass(frozen=True)
class Method:
    service: str
    path: str
    client_streaming: bool
    server_streaming: bool

    @property
    def kind(self) -> str:
        return {(False, False): "unary", (True, False): "client-streaming", (False, True): "server-streaming",
                (True, True): "bidi"}[(self.client_streaming, self.server_streaming)]


def _methods() -> list[Method]:
    modules = [importlib.import_module(f"mlops.v1.{m.name}") for m in pkgutil.iter_modules(mlops.v1.__path__)
               if m.name.endswith("_pb2")]
    out = []
    for module in [*modules, service_pb2]:
        for svc in module.DESCRIPTOR.services_by_name.values():
            assert svc.full_name in SERVES, f"a gRPC service this suite does not know: {svc.full_name}"
            for m in svc.methods:
                out.append(Method(SERVES[svc.full_name], f"/{svc.full_name}/{m.name}", m.client_streaming,
                                  m.server_streaming))
    return out


METHODS = [m for m in _methods() if not policy.OPEN_GRPC.match(m.path)]
STREAMING = [m for m in METHODS if m.client_streaming or m.server_streaming]


def _call(secure: SecureStack, m: Method, token: str | None) -> grpc.StatusCode:
    """The status of one call with an empty request (or a stream of one), read to the end."""
    md = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(secure.grpc(m.service)) as channel:
        try:
            if m.client_streaming and m.server_streaming:
                for _ in channel.stream_stream(m.path)(iter([b""]), metadata=md, timeout=30):
                    pass
            elif m.client_streaming:
                channel.stream_unary(m.path)(iter([b""]), metadata=md, timeout=30)
            elif m.server_streaming:
                for _ in channel.unary_stream(m.path)(b"", metadata=md, timeout=30):
                    pass
            else:
                channel.unary_unary(m.path)(b"", metadata=md, timeout=30)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def test_the_suite_sees_every_kind_of_method() -> None:
    kinds = {m.kind for m in METHODS}
    assert kinds == {"unary", "client-streaming", "server-streaming", "bidi"}, kinds
    assert any(m.path == "/inference.GRPCInferenceService/ModelStreamInfer" for m in STREAMING)


@pytest.fixture(scope="module")
def revoked(secure: SecureStack) -> Iterator[str]:
    store = TokenStore(secure.home / "auth" / "tokens.json")
    record, token = store.create(f"sec-revoked-{uuid.uuid4().hex[:6]}", "admin")
    store.revoke(record.id)
    yield token


@pytest.mark.parametrize("m", METHODS, ids=lambda m: f"{m.kind}:{m.path}")
def test_no_method_answers_without_a_valid_token(secure: SecureStack, revoked: str, m: Method) -> None:
    for token in (None, "mlops_forged_0000000000000000", revoked):
        code = _call(secure, m, token)
        assert code == grpc.StatusCode.UNAUTHENTICATED, (m.path, "revoked" if token == revoked else token, code)


@pytest.mark.parametrize("m", [m for m in METHODS if policy.is_staged(policy.grpc_stage_default(m.path)) is False],
                         ids=lambda m: f"{m.kind}:{m.path}")
def test_a_role_without_the_permission_is_denied(secure: SecureStack, m: Method) -> None:
    """(Methods whose permission depends on a stage in the request: tests/security/test_sec_stages.py.)"""
    needed = policy.grpc_permission(m.path)
    weak = [r for r in ROLES if not policy.allowed(r, needed)]
    for role in weak:
        assert _call(secure, m, secure.token(role)) == grpc.StatusCode.PERMISSION_DENIED, (m.path, role, needed)
    for role in [r for r in ROLES if r not in weak][:1]:  # the wrapper lets a role that holds it through
        code = _call(secure, m, secure.token(role))
        assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), (m.path, role)


def test_the_bidi_stream_refuses_before_it_reads_a_request(secure: SecureStack) -> None:
    """``ModelStreamInfer`` with a stream that never sends: refused at once, not after a first message."""
    path = "/inference.GRPCInferenceService/ModelStreamInfer"

    def never_sends() -> Iterator[bytes]:
        yield from ()

    with grpc.insecure_channel(secure.grpc("inference")) as channel:
        for role, want in ((None, grpc.StatusCode.UNAUTHENTICATED), ("viewer", grpc.StatusCode.PERMISSION_DENIED),
                           ("producer", grpc.StatusCode.PERMISSION_DENIED)):
            call = channel.stream_stream(path)(never_sends(), metadata=support.metadata(secure, role), timeout=30)
            with pytest.raises(grpc.RpcError) as err:
                list(call)
            assert err.value.code() == want, (role, err.value.code(), err.value.details())
