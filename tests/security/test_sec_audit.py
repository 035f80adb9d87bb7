"""Refused attempts leave a trace: every 401/403 is counted in ``mlops_auth_refused_total`` and audited
(``refused <method> <path>`` or ``refused /<gRPC method>``, the token's id as ``actor_id``, the peer in the
reason) with a per-caller rate limit, so a flood of refusals is counted in full but fills neither the
audit store nor ``audit.log``."""

from __future__ import annotations

import uuid

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from mlops.auth.refusals import AuditLimiter
from mlops.auth.tokens import TokenStore
from mlops.v1 import registry_pb2, registry_pb2_grpc
from tests.security import support
from tests.security.conftest import SecureStack

BURST = AuditLimiter().burst  # audit records per caller per window, per process


def _fresh_token(secure: SecureStack, role: str) -> tuple[str, str, str]:
    """``(id, name, token)`` of a token no other test has used (its audit budget is whole)."""
    name = f"sec-audit-{role}-{uuid.uuid4().hex[:6]}"
    record, token = TokenStore(secure.home / "auth" / "tokens.json").create(name, role)
    return record.id, name, token


def _counter(secure: SecureStack, scraped: str, metric: str, **labels: str) -> float:
    text = httpx.get(secure.url(scraped, "/metrics"), timeout=30).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{metric}_total" and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_a_refused_rest_call_is_audited_with_the_token_id(secure: SecureStack) -> None:
    token_id, name, token = _fresh_token(secure, "viewer")
    target = f"/v1/endpoints/audit-{uuid.uuid4().hex[:6]}"
    r = httpx.put(secure.url("bandit-router", target), headers={"authorization": f"Bearer {token}"},
                  json={"variants": [], "policy": {"type": "fixed"}}, timeout=30)
    assert r.status_code == 403, r.text
    entries = support.audit_entries(secure, lambda e: bool(e), actor_id=token_id, target=target)
    entry = entries[0]
    assert entry["actor"] == name and entry["action"] == f"refused PUT {target}", entry
    assert "403" in entry["reason"] and "127.0.0.1" in entry["reason"], entry


def test_an_anonymous_refusal_is_audited_with_its_peer(secure: SecureStack) -> None:
    target = f"/v1/models/anon-{uuid.uuid4().hex[:6]}/rollback"
    # drift: a service no other test calls anonymously over REST (the audit budget of an address is shared)
    r = httpx.post(secure.url("drift", target), json={"reason": "no token"}, timeout=30)
    assert r.status_code == 401
    entry = support.audit_entries(secure, lambda e: bool(e), target=target)[0]
    assert entry["actor"] == "anonymous" and entry["actor_id"] == "" and "401" in entry["reason"], entry


def test_a_refused_grpc_call_is_audited_with_the_token_id(secure: SecureStack) -> None:
    token_id, name, token = _fresh_token(secure, "viewer")
    with grpc.insecure_channel(secure.grpc("registry")) as channel:
        code, _ = support.refused_code(lambda: registry_pb2_grpc.RegistryServiceStub(channel).SetStage(
            registry_pb2.SetStageRequest(model="m", version="1", stage="candidate"),
            metadata=(("authorization", f"Bearer {token}"),), timeout=30))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    entries = support.audit_entries(secure, lambda e: bool(e), actor_id=token_id)
    assert entries[0]["action"] == "refused /mlops.v1.RegistryService/SetStage", entries[0]
    assert entries[0]["actor"] == name


def test_a_flood_of_refusals_is_counted_in_full_and_audited_up_to_the_limit(secure: SecureStack) -> None:
    token_id, _, token = _fresh_token(secure, "viewer")
    flood = BURST * 3
    labels = {"service": "bandit-router", "transport": "http"}
    refused = _counter(secure, "bandit-router", "mlops_auth_refused", reason="permission_denied", **labels)
    unaudited = _counter(secure, "bandit-router", "mlops_auth_refused_unaudited", **labels)
    with httpx.Client(timeout=30, headers={"authorization": f"Bearer {token}"}) as http:
        for i in range(flood):
            r = http.put(secure.url("bandit-router", f"/v1/endpoints/flood-{i}"),
                         json={"variants": [], "policy": {"type": "fixed"}})
            assert r.status_code == 403
    assert _counter(secure, "bandit-router", "mlops_auth_refused", reason="permission_denied",
                    **labels) - refused == flood
    assert _counter(secure, "bandit-router", "mlops_auth_refused_unaudited", **labels) - unaudited == flood - BURST
    entries = support.audit_entries(secure, lambda e: len(e) >= BURST, actor_id=token_id)
    assert len(entries) == BURST and all(e["action"].startswith("refused PUT /v1/endpoints/") for e in entries)
