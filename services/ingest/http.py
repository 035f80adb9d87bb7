"""REST adapter of ingest: events (JSON array, one object, or NDJSON), schemas (with their diff and its checks:
:mod:`services.ingest.schema_change`), per-stream counters."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from mlops import json_input
from mlops.errors import InvalidArgument, TooLarge
from services.ingest.core import Ingestor
from services.ingest.schema import StreamSchema, check_stream_name
from services.ingest.schema_change import SchemaChanges


def _parse_body(body: bytes, content_type: str) -> list[Any]:
    text = body.decode("utf-8", errors="strict") if body else ""
    if not text.strip():
        raise InvalidArgument("the request body is empty; send a JSON array, an object or NDJSON", field="body")
    if "ndjson" in content_type or "jsonlines" in content_type:
        return _parse_ndjson(text)
    try:
        data = json_input.loads(text)
    except json_input.NotJson:
        # A body of several lines that is not one JSON document is read as NDJSON.
        if "\n" in text.strip():
            return _parse_ndjson(text)
        raise InvalidArgument("the body is not valid JSON", field="body") from None
    return data if isinstance(data, list) else [data]


def _parse_ndjson(text: str) -> list[Any]:
    events = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(json_input.loads(line, field=f"body[line {n}]"))
        except json_input.NotJson as exc:
            raise InvalidArgument(f"line {n} is not valid JSON: {exc.message}", field=f"body[line {n}]") from None
    return events


def router(ingestor: Ingestor, changes: SchemaChanges, max_body_bytes: int) -> APIRouter:
    api = APIRouter(prefix="/v1/streams", tags=["ingest"])

    @api.post("/{stream}/events", status_code=202)
    async def post_events(stream: str, request: Request) -> JSONResponse:
        check_stream_name(stream)
        # The platform's middleware stops a body at the platform's limit while it is read; ingest's own is lower.
        if int(request.headers.get("content-length") or 0) > max_body_bytes:
            raise TooLarge(f"the body is larger than {max_body_bytes} bytes", field="body")
        body = await request.body()
        if len(body) > max_body_bytes:
            raise TooLarge(f"the body is larger than {max_body_bytes} bytes", field="body")
        try:
            events = _parse_body(body, request.headers.get("content-type", ""))
        except UnicodeDecodeError:
            raise InvalidArgument("the body is not UTF-8", field="body") from None
        result = await ingestor.ingest(stream, events)
        rejected = [r.to_dict() for r in result.rejected]
        payload = {"accepted": result.accepted, "duplicates": result.duplicates, "rejected": rejected}
        if result.rejected and not result.accepted and not result.duplicates:
            first = result.rejected[0]
            error = {"code": "invalid_argument", "message": f"event {first.index}: {first.error}"}
            if first.field:
                error["field"] = first.field
            return JSONResponse({"error": error, **payload}, status_code=400)
        return JSONResponse(payload, status_code=202)

    @api.put("/{stream}/schema")
    async def put_schema(
        stream: str,
        schema: StreamSchema,
        force: Annotated[bool, Query(description="Store it although a serving model version reads a field it drops "
                                                 "or retypes (needs a reason; audited as schema.forced).")] = False,
        reason: Annotated[str, Query(max_length=1000, description="Why; needed with force.")] = "",
        dry_run: Annotated[bool, Query(description="Show the diff and who reads what it changes; store "
                                                   "nothing.")] = False,
    ) -> dict[str, Any]:
        """Declare the stream's schema: the stored schema with ``changes`` (fields added, dropped, retyped, and the
        serving model versions that read them). Dropping or retyping a field a serving version reads is refused
        (409, the diff in ``error.details``) unless forced."""
        return (await changes.put(stream, schema, force=force, reason=reason, dry_run=dry_run)).to_dict()

    @api.get("/{stream}/schema")
    async def get_schema(stream: str) -> StreamSchema:
        return ingestor.schemas.get(stream)

    @api.get("/{stream}/stats")
    async def get_stats(stream: str) -> dict[str, Any]:
        return await ingestor.stats(stream)

    return api
