"""gRPC adapter of ingest (``mlops.v1.IngestService``): unary and client-streaming events, schemas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from mlops.errors import InvalidArgument
from mlops.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc
from services.ingest.core import Ingestor, IngestResult
from services.ingest.schema import FieldSpec, StreamSchema
from services.ingest.schema_change import SchemaChanges


def raw_to_dict(event: events_pb2.RawEvent, schema: StreamSchema) -> dict[str, Any]:
    out: dict[str, Any] = MessageToDict(event.fields) if event.HasField("fields") else {}
    if event.event_id:
        out["event_id"] = event.event_id
    if event.entity_id:
        out[schema.entity_field] = event.entity_id
    if event.HasField("event_time"):
        out[schema.time_field] = event.event_time.ToDatetime().isoformat() + "+00:00"
    return out


def schema_to_proto(schema: StreamSchema) -> ingest_pb2.StreamSchema:
    return ingest_pb2.StreamSchema(
        stream=schema.stream, entity_field=schema.entity_field, time_field=schema.time_field, version=schema.version,
        fields=[ingest_pb2.FieldSpec(name=f.name, type=f.type, required=f.required, min=f.min, max=f.max,
                                     enum=f.enum or [], pii=f.pii or "") for f in schema.fields],
    )


def schema_from_proto(msg: ingest_pb2.StreamSchema) -> StreamSchema:
    try:
        return StreamSchema(
            stream=msg.stream, entity_field=msg.entity_field or "entity_id", time_field=msg.time_field or "event_time",
            fields=[FieldSpec(name=f.name, type=f.type, required=f.required,  # type: ignore[arg-type]
                              min=f.min if f.HasField("min") else None, max=f.max if f.HasField("max") else None,
                              enum=list(f.enum) or None, pii=f.pii or None) for f in msg.fields],
        )
    except ValueError as exc:
        raise InvalidArgument(f"invalid schema: {exc}", field="fields") from exc


def _response(result: IngestResult) -> ingest_pb2.SendEventsResponse:
    if result.rejected and not result.accepted and not result.duplicates:
        first = result.rejected[0]
        raise InvalidArgument(f"event {first.index}: {first.error}", field=first.field)
    return ingest_pb2.SendEventsResponse(
        accepted=result.accepted, duplicates=result.duplicates,
        rejected=[ingest_pb2.RejectedEvent(index=r.index, error=r.error, field=r.field or "") for r in result.rejected],
    )


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, ingestor: Ingestor, changes: SchemaChanges) -> None:
        self._ingestor = ingestor
        self._changes = changes

    async def SendEvents(self, request: ingest_pb2.SendEventsRequest, context: grpc.aio.ServicerContext
                         ) -> ingest_pb2.SendEventsResponse:
        schema = self._ingestor.schemas.get(request.stream)
        events = [raw_to_dict(e, schema) for e in request.events]
        return _response(await self._ingestor.ingest(request.stream, events))

    async def StreamEvents(self, request_iterator: AsyncIterator[events_pb2.RawEvent],
                           context: grpc.aio.ServicerContext) -> ingest_pb2.SendEventsResponse:
        total = ingest_pb2.SendEventsResponse()
        batch: list[events_pb2.RawEvent] = []
        offset = 0

        async def flush() -> None:
            nonlocal offset, batch
            by_stream: dict[str, list[tuple[int, events_pb2.RawEvent]]] = {}
            for i, e in enumerate(batch):
                if not e.stream:
                    raise InvalidArgument(f"event {offset + i} has no stream", field="stream")
                by_stream.setdefault(e.stream, []).append((offset + i, e))
            for stream, items in by_stream.items():
                schema = self._ingestor.schemas.get(stream)
                result = await self._ingestor.ingest(stream, [raw_to_dict(e, schema) for _, e in items])
                total.accepted += result.accepted
                total.duplicates += result.duplicates
                for r in result.rejected:
                    total.rejected.append(ingest_pb2.RejectedEvent(
                        index=items[r.index][0], error=r.error, field=r.field or ""))
            offset += len(batch)
            batch = []

        async for event in request_iterator:
            batch.append(event)
            if len(batch) >= 500:
                await flush()
        if batch:
            await flush()
        return total

    async def PutSchema(self, request: ingest_pb2.StreamSchema, context: grpc.aio.ServicerContext
                        ) -> ingest_pb2.StreamSchema:
        # No force over gRPC (StreamSchema has no field for it): a change that drops or retypes a field a serving
        # version reads is FAILED_PRECONDITION with the diff in the message; force it over REST.
        outcome = await self._changes.put(request.stream, schema_from_proto(request))
        assert outcome.schema is not None
        return schema_to_proto(outcome.schema)

    async def GetSchema(self, request: ingest_pb2.GetSchemaRequest, context: grpc.aio.ServicerContext
                        ) -> ingest_pb2.StreamSchema:
        return schema_to_proto(self._ingestor.schemas.get(request.stream))
