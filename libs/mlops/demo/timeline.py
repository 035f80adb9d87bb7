"""After the run, the demo reconstructs what the platform did by itself from its public record: drift
alerts (drift API), training requests (the ``training.requests`` topic), versions and stage changes
(registry API)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from mlops.bus import topics
from mlops.demo.client import Platform
from mlops.settings import PlatformSettings
from mlops.v1 import events_pb2


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


async def _training_requests(settings: PlatformSettings, model: str) -> list[events_pb2.TrainingRequest]:
    consumer = AIOKafkaConsumer(
        topics.name(topics.TRAINING_REQUESTS, settings), bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"demo-{uuid.uuid4().hex}", auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    out: list[events_pb2.TrainingRequest] = []
    try:
        for _ in range(6):
            batch = await consumer.getmany(timeout_ms=500)
            if not batch and out:
                break
            for records in batch.values():
                for r in records:
                    req = events_pb2.TrainingRequest()
                    try:
                        req.ParseFromString(r.value)
                    except Exception:
                        continue
                    if req.model == model:
                        out.append(req)
    finally:
        await consumer.stop()
    return out


def training_requests(settings: PlatformSettings, model: str) -> list[dict[str, Any]]:
    reqs = asyncio.run(_training_requests(settings, model))
    return [{"time": r.time.ToDatetime(tzinfo=UTC) if r.HasField("time") else None, "reason": r.reason,
             "request_id": r.request_id} for r in reqs]


def alerts(platform: Platform, model: str) -> list[dict[str, Any]]:
    data = platform.call("GET", "drift", "/v1/alerts")
    items = data.get("alerts", []) if isinstance(data, dict) else data
    return [a for a in items if a.get("model") == model]


def versions(platform: Platform, model: str) -> list[dict[str, Any]]:
    data = platform.call("GET", "registry", f"/v1/models/{model}/versions")
    items = data.get("versions", []) if isinstance(data, dict) else data
    # The list may abbreviate versions; each version's own record has its stage transitions.
    return [platform.call("GET", "registry", f"/v1/models/{model}/versions/{v['version']}") for v in items]
