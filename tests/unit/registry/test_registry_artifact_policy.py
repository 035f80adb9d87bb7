"""Registration inspects the artifact before anything is stored: a refused one leaves no version and no
bytes, and the refusal goes to the audit trail with who tried."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from mlops.auth.guard import current_principal
from mlops.auth.tokens import Principal
from mlops.modelguard import ArtifactRefused, ModelPolicy
from mlops.v1 import events_pb2
from services.registry.artifacts import ArtifactStore
from services.registry.core import Registry
from services.registry.store import RegistryStore
from services.registry.views import RegisterInput, RunInput, Signature

LINEAGE = RunInput(dataset_id="ds-1", git_commit="abc", python_version="CPython 3.11.7")


class Leaks(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.from_file("/etc/hostname", False, 4, dtype=torch.uint8).float().sum()


class Recorder:
    started = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    async def send(self, topic: str, message: object, *, key: str, event_id: str) -> str:
        self.sent.append((topic, message))
        return event_id


def _bytes(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


async def test_a_refused_artifact_is_not_stored_and_is_audited(tmp_path: Path) -> None:
    producer = Recorder()
    store = RegistryStore(f"sqlite:///{tmp_path / 'r.db'}", ArtifactStore(tmp_path / "a"))
    registry = Registry(store, producer, models=ModelPolicy(isolate=False))  # type: ignore[arg-type]
    token = current_principal.set(Principal(token_id="t-1", name="mallory", role="scientist"))
    try:
        with pytest.raises(ArtifactRefused, match="aten::from_file"):
            await registry.register(RegisterInput(model="m", artifact=_bytes(Leaks()), signature=Signature(["f"]),
                                                  actor="mallory", run=LINEAGE))
    finally:
        current_principal.reset(token)
    assert await registry.list_models() == []
    assert not any(p.is_file() for p in (tmp_path / "a").rglob("*"))
    audits = [m for topic, m in producer.sent if topic == "audit.log"]
    assert len(audits) == 1 and isinstance(audits[0], events_pb2.AuditRecord)
    record = audits[0]
    assert (record.actor, record.actor_id, record.action, record.target) == ("mallory", "t-1", "artifact.refused", "m")
    assert "aten::from_file" in record.reason
    store.close()
