"""Kafka adapter of ingest: records on ``events.raw`` (JSON, or protobuf ``RawEvent``) are validated like
REST events; a record that cannot be ingested goes to ``events.deadletter`` with the reason in headers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from mlops.bus.envelope import JSON, Envelope
from mlops.errors import PoisonRecord
from mlops.v1 import events_pb2
from services.ingest.core import Ingestor
from services.ingest.grpc_api import raw_to_dict


def _parse(env: Envelope, ingestor: Ingestor) -> tuple[str, dict[str, Any]]:
    looks_json = env.content_type == JSON or env.value[:1] in (b"{", b"[", b" ", b"\n")
    if looks_json:
        try:
            data = json.loads(env.value)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PoisonRecord(f"bad_json: the record is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise PoisonRecord("not_an_object: an events.raw record must be one JSON object")
        stream = data.get("stream")
        if not isinstance(stream, str) or not stream:
            raise PoisonRecord("missing_field: stream is required", field="stream")
        event = data.get("event", {k: v for k, v in data.items() if k != "stream"})
        if not isinstance(event, dict):
            raise PoisonRecord("not_an_object: event must be a JSON object", field="event")
        return stream, event
    raw = env.decode(events_pb2.RawEvent)
    if not raw.stream:
        raise PoisonRecord("missing_field: stream is required", field="stream")
    return raw.stream, raw_to_dict(raw, ingestor.schemas.get(raw.stream))


def on_raw(ingestor: Ingestor) -> Callable[[Envelope], Awaitable[None]]:
    async def handle(env: Envelope) -> None:
        stream, event = _parse(env, ingestor)
        result = await ingestor.ingest(stream, [event], default_ids=[env.event_id])
        if result.rejected:
            r = result.rejected[0]
            raise PoisonRecord(f"{r.reason}: {r.error}", field=r.field)

    return handle
