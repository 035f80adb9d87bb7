"""The audit trail: every state change (and, rate limited, every refused attempt:
:mod:`mlops.auth.refusals`) becomes an ``AuditRecord`` on ``audit.log`` (actor, the actor's token id,
whom a service acted for, time, action, target, reason, trace id), and one consumer appends them, once
each, to an append-only store that
``mlops audit`` and ``GET /v1/audit`` query."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2
from redis.asyncio import Redis

from mlops import telemetry
from mlops.bus import topics
from mlops.bus.envelope import Envelope
from mlops.bus.idempotency import ProcessedLog
from mlops.bus.producer import Producer
from mlops.v1 import events_pb2


async def record(producer: Producer | None, actor: str, action: str, target: str, reason: str = "", *,
                 actor_id: str = "", on_behalf_of: str = "") -> None:
    """Publish one state change to ``audit.log``."""
    if producer is None or not producer.started:
        return
    now = timestamp_pb2.Timestamp()
    now.FromDatetime(datetime.now(UTC))
    msg = events_pb2.AuditRecord(actor=actor, action=action, target=target, reason=reason[:1000],
                                 trace_id=telemetry.current_trace_id(), time=now, actor_id=actor_id,
                                 on_behalf_of=on_behalf_of[:200])
    await producer.send(topics.AUDIT_LOG, msg, key=target, event_id=f"audit:{uuid.uuid4().hex}")


class AuditStore:
    """Append-only JSON lines, one file per day under ``<home>/audit``; never rewritten."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, entry: dict[str, Any]) -> None:
        day = entry["time"][:10]
        with self._lock, (self.root / f"audit-{day}.jsonl").open("a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")

    def query(self, actor: str | None = None, action: str | None = None, target: str | None = None,
              since: str | None = None, limit: int = 200, actor_id: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for path in sorted(self.root.glob("audit-*.jsonl"), reverse=True):
            lines = path.read_text().splitlines()
            for line in reversed(lines):
                e = json.loads(line)
                if actor and e["actor"] != actor:
                    continue
                if actor_id and e.get("actor_id") != actor_id:
                    continue
                if action and action not in e["action"]:
                    continue
                if target and target not in e["target"]:
                    continue
                if since and e["time"] < since:
                    continue
                out.append(e)
                if len(out) >= limit:
                    return out
        return out


def consumer(store: AuditStore, redis: Redis, ttl_s: int) -> Callable[[Envelope], Awaitable[None]]:
    """The ``audit.log`` handler: each record appended once, whatever the redeliveries."""
    done = ProcessedLog(redis, "audit-store", ttl_s)

    async def handle(env: Envelope) -> None:
        if await done.seen(env.event_id):
            return
        msg = env.decode(events_pb2.AuditRecord)
        entry = {
            "event_id": env.event_id, "actor": msg.actor, "action": msg.action, "target": msg.target,
            "reason": msg.reason, "trace_id": msg.trace_id, "actor_id": msg.actor_id,
            "on_behalf_of": msg.on_behalf_of,
            "time": msg.time.ToDatetime(tzinfo=UTC).isoformat() if msg.HasField("time") else
            datetime.now(UTC).isoformat(),
        }
        await asyncio.to_thread(store.append, entry)
        await done.mark(env.event_id)

    return handle
