"""Stream schemas: field names, types, required, ranges and enums; validation of one event against its
schema, with errors that name the field and the reason; durable storage of schemas under MLOPS_HOME."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from mlops.errors import Conflict, InvalidArgument, NotFound
from mlops.names import check_name, safe_join
from services.ingest import pii
from services.ingest.pii import PiiPolicy

FieldType = Literal["float", "int", "string", "bool"]
RESERVED = {"event_id", "stream"}


class FieldSpec(BaseModel):
    name: str
    type: FieldType
    required: bool = True
    min: float | None = None
    max: float | None = None
    enum: list[str] | None = None
    pii: PiiPolicy | None = None  # string fields only: what to do with e-mails, phones, card numbers


class StreamSchema(BaseModel):
    stream: str = ""
    entity_field: str = "entity_id"
    time_field: str = "event_time"
    fields: list[FieldSpec] = Field(default_factory=list)
    dedup_window_s: int | None = Field(
        None, ge=1, description="A repeated event_id within this many seconds is dropped (default: the service's)."
    )
    version: int = 0

    @cached_property
    def known_keys(self) -> frozenset[str]:
        """Every key an event of this stream may carry (computed once per schema version)."""
        return frozenset({f.name for f in self.fields} | RESERVED | {self.entity_field, self.time_field})

    @cached_property
    def checks(self) -> list[tuple[str, bool, Callable[[Any], Any]]]:
        """Per field: (name, required, check), each check specialised to its field (computed once per
        schema version): the common case costs a type test and a comparison or two."""
        return [(f.name, f.required, _fast_check(f)) for f in self.fields]

    @field_validator("fields")
    @classmethod
    def _unique(cls, fields: list[FieldSpec]) -> list[FieldSpec]:
        names = [f.name for f in fields]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate field names: {sorted(dupes)}")
        bad = [n for n in names if not n or any(ord(c) < 32 for c in n)]
        if bad:
            raise ValueError(f"field names must be non-empty without control characters: {bad!r}")
        return fields


@dataclass(slots=True)
class ValidEvent:
    """An event that passed its schema, normalised (a plain slotted class: built once per event on the hot path)."""

    event_id: str | None
    entity_id: str
    event_time: datetime
    fields: dict[str, Any]


class EventError(InvalidArgument):
    """Why one event was rejected; ``reason`` is a short code for counters."""

    def __init__(self, message: str, field: str | None, reason: str) -> None:
        super().__init__(message, field)
        self.reason = reason


def check_stream_name(stream: str) -> None:
    check_name(stream, "stream")


def _parse_time(value: Any, field: str) -> datetime:
    if isinstance(value, bool):
        raise EventError(f"{field} must be an ISO-8601 time or epoch seconds", field, "bad_time")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise EventError(f"{field} must be finite", field, "bad_time")
        return datetime.fromtimestamp(float(value), tz=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise EventError(f"{field} is not an ISO-8601 time: {value!r}", field, "bad_time") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise EventError(f"{field} must be an ISO-8601 time or epoch seconds", field, "bad_time")


def _check_value(spec: FieldSpec, value: Any) -> Any:
    name = spec.name
    if spec.type == "bool":
        if not isinstance(value, bool):
            raise EventError(f"{name} must be a bool, got {type(value).__name__}", name, "wrong_type")
        return value
    if spec.type == "string":
        if not isinstance(value, str):
            raise EventError(f"{name} must be a string, got {type(value).__name__}", name, "wrong_type")
        if spec.enum is not None and value not in spec.enum:
            raise EventError(f"{name} must be one of {spec.enum}, got {value!r}", name, "not_in_enum")
        if spec.pii is not None and (kinds := pii.find(value)):
            if spec.pii == "reject":
                raise EventError(f"{name} holds personal data ({', '.join(kinds)}), which this stream refuses",
                                 name, "pii")
            return pii.mask(value) if spec.pii == "mask" else pii.hashed(value)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError(f"{name} must be a {spec.type}, got {type(value).__name__}", name, "wrong_type")
    if spec.type == "int":
        if isinstance(value, float) and not value.is_integer():
            raise EventError(f"{name} must be an int, got {value}", name, "wrong_type")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise EventError(f"{name} must be a finite number", name, "wrong_type")
    if spec.min is not None and value < spec.min:
        raise EventError(f"{name} must be >= {spec.min}, got {value}", name, "out_of_range")
    if spec.max is not None and value > spec.max:
        raise EventError(f"{name} must be <= {spec.max}, got {value}", name, "out_of_range")
    return value


def _fast_check(spec: FieldSpec) -> Callable[[Any], Any]:
    """``_check_value(spec, value)`` with a fast path for the values that pass as they are; anything else
    (ints given for floats, out of range, wrong type, PII to look for) takes the full check, which gives
    the same result or the same error."""
    lo, hi = spec.min, spec.max

    def full(value: Any) -> Any:
        return _check_value(spec, value)

    if spec.type == "float":
        def check_float(value: Any) -> Any:
            # value - value is 0.0 only for a finite float (inf - inf and nan - nan are nan)
            if (type(value) is float and value - value == 0.0 and (lo is None or value >= lo)
                    and (hi is None or value <= hi)):
                return value
            return full(value)
        return check_float
    if spec.type == "int":
        def check_int(value: Any) -> Any:
            if type(value) is int and (lo is None or value >= lo) and (hi is None or value <= hi):
                return value
            return full(value)
        return check_int
    if spec.type == "bool":
        def check_bool(value: Any) -> Any:
            return value if type(value) is bool else full(value)
        return check_bool
    if spec.pii is not None:
        return full
    if spec.enum is not None:
        allowed = frozenset(spec.enum)

        def check_enum(value: Any) -> Any:
            return value if type(value) is str and value in allowed else full(value)
        return check_enum

    def check_string(value: Any) -> Any:
        return value if type(value) is str else full(value)
    return check_string


def validate_event(schema: StreamSchema, event: Any, now: datetime | None = None) -> ValidEvent:
    """Check ``event`` against ``schema``; raises :class:`EventError` naming the field and the reason."""
    if not isinstance(event, dict):
        raise EventError(f"an event must be a JSON object, got {type(event).__name__}", None, "not_an_object")
    event_id = event.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or not event_id or len(event_id) > 256):
        raise EventError("event_id must be a non-empty string of at most 256 characters", "event_id", "bad_event_id")
    entity = event.get(schema.entity_field)
    if entity is None or entity == "":
        raise EventError(f"{schema.entity_field} is required", schema.entity_field, "missing_field")
    if isinstance(entity, bool) or not isinstance(entity, str | int):
        raise EventError(f"{schema.entity_field} must be a string or an int", schema.entity_field, "wrong_type")
    raw_time = event.get(schema.time_field)
    event_time = _parse_time(raw_time, schema.time_field) if raw_time is not None else (now or datetime.now(UTC))
    known = schema.known_keys
    for key in event:
        if key not in known:
            raise EventError(f"{key} is not a field of stream {schema.stream!r}", key, "unknown_field")
    fields: dict[str, Any] = {}
    for name, required, check in schema.checks:
        value = event.get(name)
        if value is None:
            if required:
                raise EventError(f"{name} is required", name, "missing_field")
            continue
        fields[name] = check(value)
    return ValidEvent(event_id=event_id, entity_id=str(entity), event_time=event_time, fields=fields)


class SchemaStore:
    """Schemas kept as JSON files (written atomically) under ``<home>/ingest/schemas``, cached in memory."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, StreamSchema]] = {}
        self._paths: dict[str, Path] = {}

    def _path(self, stream: str) -> Path:
        # Every way in (REST, gRPC, Kafka) reaches the file through here: the name is checked once for all
        # (and remembered, so the hot path pays one dict lookup).
        path = self._paths.get(stream)
        if path is None:
            path = safe_join(self._root, f"{check_name(stream, 'stream')}.json", field="stream")
            if len(self._paths) < 10_000:
                self._paths[stream] = path
        return path

    def put(self, stream: str, schema: StreamSchema, expect_version: int | None = None) -> StreamSchema:
        """Store ``schema`` as the stream's next version; with ``expect_version``, only if the stored one is still
        that version (0: none), so a change checked against one version never overwrites another."""
        check_stream_name(stream)
        with self._lock:
            previous = self._load(stream)
            if expect_version is not None and (previous.version if previous else 0) != expect_version:
                raise Conflict(f"the schema of stream {stream!r} changed while this change was checked; send it "
                               "again", field="stream")
            stored = schema.model_copy(update={"stream": stream, "version": (previous.version if previous else 0) + 1})
            tmp = self._path(stream).with_suffix(".tmp")
            tmp.write_text(stored.model_dump_json(indent=2))
            tmp.replace(self._path(stream))
            self._cache[stream] = (self._path(stream).stat().st_mtime, stored)
            return stored

    def find(self, stream: str) -> StreamSchema | None:
        """The stored schema, or None when the stream has none yet."""
        return self._load(stream)

    def get(self, stream: str) -> StreamSchema:
        schema = self._load(stream)
        if schema is None:
            raise NotFound(f"stream {stream!r} has no schema; PUT /v1/streams/{stream}/schema first", field="stream")
        return schema

    def _load(self, stream: str) -> StreamSchema | None:
        """The stored schema; re-read only when the file changed (another ingest process may have written it)."""
        path = self._path(stream)
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None
        cached = self._cache.get(stream)
        if cached and cached[0] == mtime:
            return cached[1]
        schema = StreamSchema.model_validate(json.loads(path.read_text()))
        self._cache[stream] = (mtime, schema)
        return schema
