"""In-memory stand-ins for the retraining store and the Kafka producer (the drift store's is
:class:`mlops.bench.drift_memory.MemoryStore`, shared with the benchmark)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from mlops.bench.drift_memory import MemoryStore

__all__ = ["FakeProducer", "MemoryRetrainStore", "MemoryStore"]


@dataclass
class FakeProducer:
    sent: list[tuple[str, Message, str, dict[str, str]]] = field(default_factory=list)

    async def send(self, topic: str, message: Message, *, key: object = None, event_id: str | None = None,
                   headers: dict[str, str] | None = None) -> str:
        self.sent.append((topic, message, event_id or "", headers or {}))
        return event_id or ""

    def on(self, topic: str) -> list[Any]:
        return [m for t, m, _, _ in self.sent if t == topic]


@dataclass
class MemoryRetrainStore:
    """What :class:`services.drift.retraining.RetrainStore`'s claim script does, over the same model hash
    the label path increments (shared with a :class:`MemoryStore`)."""

    models: dict[str, dict[str, Any]]
    max_records: int = 500
    requests_by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    decision_log: list[dict[str, Any]] = field(default_factory=list)

    async def claim(self, model: str, request_id: str, request: bytes, record: str, now: float,
                    cooldown_s: float) -> tuple[str, ...]:
        if request_id in self.requests_by_id:
            r = self.requests_by_id[request_id]
            return ("exists", r["state"], str(r["claimed_at"]))
        m = self.models.setdefault(model, {})
        last = m.get("last_at")
        if last is not None and now - float(last) < cooldown_s:
            m["suppressed"] = int(m.get("suppressed", 0)) + 1
            return ("cooldown", str(last))
        m.update(last_at=now, labels_since=0, last_request=request_id, seq=int(m.get("seq", 0)) + 1)
        self.requests_by_id[request_id] = {"state": "claimed", "pb": request, "record": record, "claimed_at": now}
        self.order.insert(0, request_id)
        return ("claimed",)

    async def mark_sent(self, request_id: str, now: float) -> None:
        self.requests_by_id[request_id]["state"] = "sent"

    async def model_state(self, model: str) -> dict[str, str]:
        return {k: str(v) for k, v in self.models.get(model, {}).items()}

    async def set_if_absent(self, model: str, field: str, value: float) -> float:
        return float(self.models.setdefault(model, {}).setdefault(field, value))

    async def set_field(self, model: str, field: str, value: float) -> None:
        self.models.setdefault(model, {})[field] = value

    async def hold(self, model: str, pending: str) -> bool:
        state = self.models.setdefault(model, {})
        if "pending_drift" in state:
            return False
        state["pending_drift"] = pending
        return True

    async def release(self, model: str) -> None:
        self.models.setdefault(model, {}).pop("pending_drift", None)

    async def requests(self, limit: int) -> list[dict[str, Any]]:
        out = []
        for rid in self.order[:limit]:
            r = self.requests_by_id[rid]
            out.append({**json.loads(r["record"]), "state": r["state"], "pb": r["pb"], "claimed_at": r["claimed_at"]})
        return out

    async def decide(self, decision: dict[str, Any]) -> None:
        self.decision_log.insert(0, decision)

    async def decisions(self, limit: int) -> list[dict[str, Any]]:
        return self.decision_log[:limit]
