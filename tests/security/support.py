"""What several attacks need: a registration with any artifact and stage under any role, a version's stage
read back as the registry holds it, gRPC calls that return their status code, and a wait on the audit
trail (records reach the registry's store through ``audit.log``, so they land a little after the call)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import httpx

from mlops.v1 import registry_pb2, registry_pb2_grpc
from tests.integration import toy_model
from tests.security.conftest import SecureStack


def metadata(secure: SecureStack, role: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", secure.headers(role)["authorization"]),) if role else ()


def register_request(model: str, artifact: bytes, stage: str = "candidate",
                     features: tuple[str, ...] = ("a", "b")) -> registry_pb2.RegisterModelVersionRequest:
    return registry_pb2.RegisterModelVersionRequest(
        model=model, run=toy_model._run_info(model), artifact=artifact, artifact_format="torchscript",
        signature=registry_pb2.ModelSignature(features=list(features), input_name="input",
                                              output_name="output", classes=["0", "1"]),
        stage=stage, reason="registered by the adversarial suite",
    )


def register(secure: SecureStack, role: str, model: str, artifact: bytes | None = None,
             stage: str = "candidate") -> registry_pb2.ModelVersion:
    """Register (raises grpc.RpcError when refused)."""
    with grpc.insecure_channel(secure.grpc("registry")) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        return stub.RegisterModelVersion(
            register_request(model, artifact if artifact is not None else toy_model.torchscript_bytes(2), stage),
            metadata=metadata(secure, role), timeout=120)


def refused_code(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    """The status code and details of a call expected to fail (AssertionError when it succeeds)."""
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    raise AssertionError("the call succeeded")


def new_model(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def version_stage(secure: SecureStack, model: str, version: str) -> str:
    with secure.http("admin") as http:
        r = http.get(secure.url("registry", f"/v1/models/{model}/versions/{version}"))
    assert r.status_code == 200, r.text
    return str(r.json()["stage"])


def audit_entries(secure: SecureStack, want: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 90.0,
                  **query: str) -> list[dict[str, Any]]:
    """The audit entries matching ``query`` once ``want`` holds for them (AssertionError with the last
    ones seen if it never does: an event that never comes, not a speed check)."""
    deadline = time.monotonic() + timeout_s
    entries: list[dict[str, Any]] = []
    with httpx.Client(timeout=30, headers=secure.headers("admin")) as http:
        while time.monotonic() < deadline:
            r = http.get(secure.url("registry", "/v1/audit"), params={"limit": "1000", **query})
            assert r.status_code == 200, r.text
            entries = r.json()["entries"]
            if want(entries):
                return entries
            time.sleep(0.5)
    raise AssertionError(f"audit trail never matched for {query}: {entries[:5]}")
