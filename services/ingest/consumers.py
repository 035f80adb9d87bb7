"""Kafka adapter of ingest: records on ``events.raw`` (JSON, or protobuf ``RawEvent``) are validated like
REST events, a batch at a time (grouped by stream: one claim of the event_ids, one produce per group); a
record that cannot be ingested goes to ``events.deadletter``, unchanged, with the reason in headers.

Two stages for the batch consumer: :func:`prepare_raw` parses, validates and encodes a batch (CPU) while
other batches are published by :func:`on_raw` (Redis and broker round trips)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlops.bus.deadletter import dead_letter
from mlops.bus.envelope import CONTENT_TYPE, Envelope
from mlops.bus.producer import Producer
from mlops.errors import MlopsError, PoisonRecord
from mlops.v1 import events_pb2
from services.ingest.core import Ingestor, Prepared
from services.ingest.grpc_api import raw_to_dict

BatchHandler = Callable[["RawBatch", bool], Awaitable[bool]]


def _looks_json(env: Envelope) -> bool:
    """The record's content-type header decides; without one, a record whose first non-blank byte opens a
    JSON object or array is JSON. (Sniffing the first byte alone is wrong: a protobuf RawEvent starts
    with 0x0a, a newline, the tag of its first field.)"""
    declared = env.headers.get(CONTENT_TYPE)
    if declared:
        return "json" in declared
    return env.value.lstrip(b" \t\r\n")[:1] in (b"{", b"[")


class _NotJson(PoisonRecord):
    pass


_UNPARSED = object()


def _loads_all(values: list[bytes]) -> list[Any] | None:
    """Every record's JSON in one ``json.loads`` of ``[v1,v2,...]`` (a third of the cost of one call per
    record), or None when that fails or does not give one value per record (some record is not one JSON
    value: each is then parsed on its own, which names the bad one). A record can only shift the split by
    holding two values, which needs another record to hold none, and an empty element is not JSON."""
    if not values:
        return []
    try:
        data = json.loads(b"[" + b",".join(values) + b"]")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None
    return data if len(data) == len(values) else None


def _parse_json(env: Envelope, data: Any = _UNPARSED) -> tuple[str, dict[str, Any]]:
    """The record's stream and event; ``data``: its JSON, when already parsed with the batch."""
    if data is _UNPARSED:
        try:
            data = json.loads(env.value)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _NotJson(f"bad_json: the record is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise PoisonRecord("not_an_object: an events.raw record must be one JSON object")
    stream = data.get("stream")
    if not isinstance(stream, str) or not stream:
        raise PoisonRecord("missing_field: stream is required", field="stream")
    if "event" in data:
        event = data["event"]
    else:  # the record is the event itself (``data`` is this call's own: no copy needed)
        event = data
        del event["stream"]
    if not isinstance(event, dict):
        raise PoisonRecord("not_an_object: event must be a JSON object", field="event")
    return stream, event


def _parse(env: Envelope, ingestor: Ingestor, data: Any = _UNPARSED) -> tuple[str, dict[str, Any]]:
    if _looks_json(env):
        try:
            return _parse_json(env, data)
        except _NotJson:
            if env.headers.get(CONTENT_TYPE):
                raise
            # undeclared, and not JSON after all: a protobuf whose first bytes happened to look like JSON?
            try:
                raw = env.decode(events_pb2.RawEvent)
            except PoisonRecord:
                raise PoisonRecord("bad_json: the record is neither JSON nor a protobuf RawEvent") from None
    else:
        raw = env.decode(events_pb2.RawEvent)
    if not raw.stream:
        raise PoisonRecord("missing_field: stream is required", field="stream")
    return raw.stream, raw_to_dict(raw, ingestor.schemas.get(raw.stream))


def _reason(exc: MlopsError) -> str:
    return exc.message if isinstance(exc, PoisonRecord) else f"{exc.code}: {exc.message}"


@dataclass
class RawBatch:
    """A batch of ``events.raw`` prepared: per stream, its events validated and encoded (with the
    envelopes they came from), and the records that go to the dead-letter topic."""

    streams: list[tuple[list[Envelope], Prepared]] = field(default_factory=list)
    dead: list[tuple[Envelope, str, str | None]] = field(default_factory=list)


def prepare_raw(ingestor: Ingestor) -> Callable[[Sequence[Envelope]], RawBatch]:
    """The CPU stage of a batch of ``events.raw`` (parse, validate, encode), which the batch consumer
    runs while other batches are published; raises only for what is not the records' fault."""

    def prepare(envelopes: Sequence[Envelope]) -> RawBatch:
        batch = RawBatch()
        by_stream: dict[str, list[tuple[Envelope, dict[str, Any]]]] = {}
        json_values = [env.value for env in envelopes if _looks_json(env)]
        parsed = _loads_all(json_values) if len(json_values) == len(envelopes) else None
        for i, env in enumerate(envelopes):
            try:
                stream, event = _parse(env, ingestor, parsed[i] if parsed is not None else _UNPARSED)
            except MlopsError as exc:
                if exc.http_status >= 500 and not isinstance(exc, PoisonRecord):
                    raise  # not the record's fault: retry the batch
                batch.dead.append((env, _reason(exc), exc.field))
                continue
            by_stream.setdefault(stream, []).append((env, event))
        for stream, items in by_stream.items():
            envs = [env for env, _ in items]
            try:
                prepared = ingestor.prepare(
                    stream, [e for _, e in items], default_ids=[env.event_id for env in envs],
                    origins=[f"{env.partition}:{env.offset}:{env.timestamp_ms}" for env in envs])
            except MlopsError as exc:
                if exc.http_status >= 500:
                    raise
                batch.dead.extend((env, _reason(exc), exc.field) for env in envs)
                continue
            batch.streams.append((envs, prepared))
        return batch

    return prepare


def on_raw(ingestor: Ingestor, producer: Producer) -> BatchHandler:
    """Publishes a prepared batch (:func:`prepare_raw`): claim the event_ids, produce, dead letters."""

    async def handle(batch: RawBatch, final: bool) -> bool:
        dead = list(batch.dead)
        for envs, prepared in batch.streams:
            try:
                result = await ingestor.publish(prepared)
            except MlopsError as exc:
                if exc.http_status >= 500:
                    raise
                dead.extend((env, _reason(exc), exc.field) for env in envs)
                continue
            dead.extend((envs[r.index], f"{r.reason}: {r.error}", r.field) for r in result.rejected)
        # Dead letters go out before the batch is committed (concurrently: their order does not matter).
        await asyncio.gather(*(dead_letter(producer, env, reason, field) for env, reason, field in dead))
        return True

    return handle
