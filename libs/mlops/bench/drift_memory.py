"""The drift service's Redis state in process memory: what :class:`services.drift.store.DriftStore`'s Lua
scripts do, in dicts. The drift benchmark measures the service's core with it (beside the real Redis),
and the unit tests run the monitor on it (the scripts themselves run against redis-server in the
integration tests)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from services.drift.store import Extra, Stream


@dataclass
class MemoryStore:
    window: int = 2000
    max_alerts: int = 1000
    rows_window: int = 500
    outcomes_window: int = 2000
    done: set[tuple[str, str]] = field(default_factory=set)
    hashes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    windows: dict[tuple[str, str, str, int], list[float]] = field(default_factory=dict)
    row_lists: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    outcome_lists: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    retrain: dict[str, dict[str, Any]] = field(default_factory=dict)
    stored_alerts: list[bytes] = field(default_factory=list)
    alert_ids: set[str] = field(default_factory=set)
    evidences: dict[str, str] = field(default_factory=dict)
    seen_versions: set[tuple[str, str]] = field(default_factory=set)
    dlq: dict[int, dict[str, int]] = field(default_factory=dict)
    dlq_state: set[str] = field(default_factory=set)

    async def seen(self, stream: Stream, event_id: str) -> bool:
        return (stream.topic, event_id) in self.done

    async def record(
        self, stream: Stream, event_id: str, model: str, version: str, partition: int, value: float | None,
        now: float, extra: Extra | None = None,
    ) -> tuple[int, float] | None:
        if (stream.topic, event_id) in self.done:
            return None
        extra = extra or Extra()
        self.done.add((stream.topic, event_id))
        self.seen_versions.add((model, version))
        h = self.hashes.setdefault((model, version), {})
        h[stream.count_field] = h.get(stream.count_field, 0) + 1
        if value is not None:
            h[stream.n_field] = h.get(stream.n_field, 0) + 1
            h[stream.sum_field] = h.get(stream.sum_field, 0) + value
            w = self.windows.setdefault((stream.name, model, version, partition), [])
            w.append(value)
            del w[: -self.window]
        if extra.sum_field:
            h[extra.sum_field] = h.get(extra.sum_field, 0) + extra.sum_value
        if extra.row:
            rows = self.row_lists.setdefault((model, version), [])
            rows.append(extra.row)
            del rows[: -self.rows_window]
        if extra.outcome:
            outs = self.outcome_lists.setdefault((model, version), [])
            outs.append(extra.outcome)
            del outs[: -self.outcomes_window]
            r = self.retrain.setdefault(model, {})
            r["labels_since"] = int(r.get("labels_since", 0)) + 1
            r["labels"] = int(r.get("labels", 0)) + 1
        h["last_seen"] = now
        return int(h.get(stream.n_field, 0)), h.get(stream.sum_field, 0.0)

    async def recent(self, stream: Stream, model: str, version: str, partition: int) -> list[float]:
        return list(self.windows.get((stream.name, model, version, partition), []))

    async def rows(self, model: str, version: str) -> list[str]:
        return list(self.row_lists.get((model, version), []))

    async def outcomes(self, model: str, version: str, n: int) -> list[tuple[float, float]]:
        out = []
        for item in self.outcome_lists.get((model, version), [])[-n:]:
            c, loss = item.split(",")
            out.append((float(c), float(loss)))
        return out

    async def add_alert(self, kind: str, aid: str, alert: bytes, model: str, version: str, at: float,
                        cooldown_s: float, evidence: str) -> int:
        if aid in self.alert_ids:
            return 2
        h = self.hashes.setdefault((model, version), {})
        last = h.get(f"{kind}_alert_at")
        if last is not None and abs(at - float(last)) < cooldown_s:
            h[f"{kind}_suppressed"] = h.get(f"{kind}_suppressed", 0) + 1
            return 0
        self.alert_ids.add(aid)
        self.evidences[aid] = evidence
        self.stored_alerts.insert(0, alert)
        h[f"{kind}_alerts"] = h.get(f"{kind}_alerts", 0) + 1
        h[f"{kind}_alert_at"] = at
        return 1

    async def state(self, model: str, version: str) -> dict[str, str]:
        return {k: str(v) for k, v in self.hashes.get((model, version), {}).items()}

    async def put_fields(self, model: str, version: str, fields: dict[str, str]) -> None:
        self.hashes.setdefault((model, version), {}).update(fields)

    async def versions(self) -> list[tuple[str, str]]:
        return sorted(self.seen_versions)

    async def alerts(self, limit: int) -> list[bytes]:
        return self.stored_alerts[:limit]

    async def evidence(self, alert_ids: list[str]) -> list[dict[str, Any] | None]:
        return [json.loads(self.evidences[a]) if a in self.evidences else None for a in alert_ids]

    async def count_dead_letter(self, event_id: str, source_topic: str, minute: int, window_s: float) -> bool:
        if ("events.deadletter", event_id) in self.done:
            return False
        self.done.add(("events.deadletter", event_id))
        bucket = self.dlq.setdefault(minute, {})
        bucket[source_topic] = bucket.get(source_topic, 0) + 1
        return True

    async def dead_letters(self, minutes: list[int]) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in minutes:
            for k, v in self.dlq.get(m, {}).items():
                out[k] = out.get(k, 0) + v
        return out

    async def dead_letter_state(self) -> set[str]:
        return set(self.dlq_state)

    async def set_dead_letter_state(self, topic: str, alerting: bool) -> bool:
        before = topic in self.dlq_state
        (self.dlq_state.add if alerting else self.dlq_state.discard)(topic)
        return before != alerting


class NullProducer:
    """Drops what is produced, counting it per topic."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    async def send(self, topic: str, message: Message | bytes, **_: Any) -> str:
        self.counts[topic] = self.counts.get(topic, 0) + 1
        return ""
