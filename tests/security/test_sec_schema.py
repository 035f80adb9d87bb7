"""A schema change checked against the serving models with auth on: ingest asks the registry with its own
token (role service-reader: read only), so a drop of a field a production version reads is still refused with
the diff, never waved through because the registry refused ingest; a forced drop names its actor in the
audit trail."""

from __future__ import annotations

import uuid

import grpc

from mlops.auth.policy import ROLE_PERMISSIONS, SERVICE_ROLES
from mlops.v1 import registry_pb2_grpc
from tests.integration import toy_model
from tests.security.conftest import SecureStack
from tests.security.support import audit_entries, metadata, register_request


def test_ingest_reads_the_serving_signatures_with_a_read_only_token(secure: SecureStack) -> None:
    assert ROLE_PERMISSIONS[SERVICE_ROLES["ingest"]] == {"read"}
    run = uuid.uuid4().hex[:8]
    model, stream, field = f"secschema-{run}", f"secschema{run}", f"f_{run}"
    with grpc.insecure_channel(secure.grpc("registry")) as channel:
        version = registry_pb2_grpc.RegistryServiceStub(channel).RegisterModelVersion(
            register_request(model, toy_model.torchscript_bytes(2), "production", features=(field, "other")),
            metadata=metadata(secure, "admin"), timeout=120)
    schema = {"fields": [{"name": field, "type": "float"}, {"name": "other", "type": "float"}]}
    dropped = {"fields": [{"name": "other", "type": "float"}]}
    url = secure.url("ingest", f"/v1/streams/{stream}/schema")
    with secure.http("scientist") as http:  # scientists may declare schemas
        assert http.put(url, json=schema).status_code == 200
        refused = http.put(url, json=dropped)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["details"]["read_by"] == {field: [f"{model} v{version.version} (production)"]}
        forced = http.put(url, json=dropped, params={"force": "true", "reason": "moved to stream b"})
        assert forced.status_code == 200, forced.text
    scientist = secure.token_id("scientist")
    entries = audit_entries(secure, lambda es: any(e["action"] == "schema.forced" for e in es),
                            target=f"stream:{stream}")
    forced_entry = next(e for e in entries if e["action"] == "schema.forced")
    assert forced_entry["actor_id"] == scientist and "moved to stream b" in forced_entry["reason"]
