"""Lifecycle events leave through the outbox: in order, with stable ids, retried after a failed send."""

from __future__ import annotations

from pathlib import Path

from mlops.v1 import events_pb2
from services.registry.artifacts import ArtifactStore
from services.registry.core import Registry
from services.registry.store import RegistryStore
from services.registry.views import RegisterInput, RunInput, Signature

LINEAGE = RunInput(dataset_id="ds-1", git_commit="abc", python_version="CPython 3.11.7")


class FlakyProducer:
    started = True

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, events_pb2.ModelLifecycle, str, str]] = []

    async def send(self, topic: str, message: events_pb2.ModelLifecycle, *, key: str, event_id: str) -> str:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker down")
        self.sent.append((topic, message, key, event_id))
        return event_id


class AcceptAll:
    """The artifacts here are placeholder bytes: the model policy has its own tests."""

    def check_artifact(self, artifact_format: str, data: bytes) -> None:
        return None


async def test_events_survive_a_failed_send(tmp_path: Path) -> None:
    producer = FlakyProducer(failures=1)
    store = RegistryStore(f"sqlite:///{tmp_path / 'r.db'}", ArtifactStore(tmp_path / "a"))
    registry = Registry(store, producer, models=AcceptAll())  # type: ignore[arg-type]
    req = RegisterInput(model="m", artifact=b"x", signature=Signature(["f"]), stage="production", actor="t",
                        run=LINEAGE)
    v1 = await registry.register(req)  # the send fails; the registration stands
    assert v1.version == "1" and producer.sent == []
    await registry.register(RegisterInput(model="m", artifact=b"y", signature=Signature(["f"]), stage="production",
                                          run=LINEAGE))
    await registry.set_stage("m", "1", "shadow", reason="why not", actor="me")
    assert await registry.publish_pending() == 0
    got = [(m.action, m.version, m.previous_stage, m.stage) for _, m, _, _ in producer.sent]
    assert got == [
        ("registered", "1", "", "production"),
        ("stage_changed", "1", "production", "archived"),
        ("registered", "2", "", "production"),
        ("stage_changed", "1", "archived", "shadow"),
    ]
    assert all(topic == "models.lifecycle" and key == "m" for topic, _, key, _ in producer.sent)
    assert [eid for *_, eid in producer.sent] == [f"lifecycle:m:{v}:{i}" for i, v in enumerate("1121", start=1)]
    assert producer.sent[0][1].actor == "t" and producer.sent[0][1].artifact_sha256 == v1.artifact_sha256
    store.close()
