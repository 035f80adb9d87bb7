"""The one envelope every Kafka record travels in: protobuf payload plus headers carrying
``event_id``, W3C ``traceparent``, ``content-type`` and ``schema-version``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from mlops.errors import PoisonRecord

EVENT_ID = "event_id"
CONTENT_TYPE = "content-type"
SCHEMA_VERSION = "schema-version"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
CURRENT_SCHEMA_VERSION = "1"

M = TypeVar("M", bound=Message)


def new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class Envelope:
    """A record as a consumer sees it."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    partition: int = -1
    offset: int = -1
    timestamp_ms: int = 0

    @property
    def event_id(self) -> str:
        """The record's ``event_id`` header; records without one get a stable id from their position."""
        return self.headers.get(EVENT_ID) or f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def content_type(self) -> str:
        return self.headers.get(CONTENT_TYPE, PROTOBUF)

    def decode(self, message_type: type[M]) -> M:
        """The payload as ``message_type``; a record that does not parse is a :class:`PoisonRecord`."""
        msg = message_type()
        try:
            msg.ParseFromString(self.value)
        except DecodeError as exc:
            raise PoisonRecord(f"payload is not a valid {message_type.__name__}: {exc}") from exc
        return msg


def decode_headers(raw: list[tuple[str, bytes]] | tuple | None) -> dict[str, str]:
    """Headers as text; one that is not UTF-8 is left out. (A hot path: once per record consumed.)"""
    if not raw:
        return {}
    try:
        return {k: v.decode() for k, v in raw}
    except (UnicodeDecodeError, AttributeError):
        pass
    out: dict[str, str] = {}
    for k, v in raw:
        try:
            out[k] = v.decode() if isinstance(v, bytes | bytearray) else str(v)
        except UnicodeDecodeError:
            continue
    return out


def build_headers(
    event_id: str, trace_headers: list[tuple[str, bytes]], content_type: str = PROTOBUF, **extra: str
) -> list[tuple[str, bytes]]:
    headers = [
        (EVENT_ID, event_id.encode()),
        (CONTENT_TYPE, content_type.encode()),
        (SCHEMA_VERSION, CURRENT_SCHEMA_VERSION.encode()),
        *trace_headers,
    ]
    headers.extend((k, v.encode()) for k, v in extra.items())
    return headers
