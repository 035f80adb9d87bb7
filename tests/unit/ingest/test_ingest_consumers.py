"""Parsing ``events.raw`` records: JSON or protobuf by content-type, or sniffed when it is absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import struct_pb2

from mlops.bus.envelope import Envelope
from mlops.errors import NotFound, PoisonRecord
from mlops.v1 import events_pb2
from services.ingest.consumers import _loads_all, _parse
from services.ingest.schema import SchemaStore, StreamSchema


class _Ingestor:
    def __init__(self, root: Path) -> None:
        self.schemas = SchemaStore(root)
        self.schemas.put("clicks", StreamSchema.model_validate({"fields": [{"name": "x", "type": "float"}]}))


def _proto(stream: str = "clicks", **fields: object) -> bytes:
    s = struct_pb2.Struct()
    s.update(fields)
    return events_pb2.RawEvent(stream=stream, entity_id="e1", fields=s).SerializeToString()


def _env(value: bytes, content_type: str | None = None) -> Envelope:
    return Envelope(topic="events.raw", value=value, headers={"content-type": content_type} if content_type else {})


def test_protobuf_that_starts_with_a_newline_byte_is_not_taken_for_json(tmp_path: Path) -> None:
    value = _proto(x=1.5)
    assert value[:1] == b"\n"  # field 1's tag: what a naive JSON sniff mistook for whitespace
    for ct in (None, "application/x-protobuf"):
        assert _parse(_env(value, ct), _Ingestor(tmp_path)) == ("clicks", {"x": 1.5, "entity_id": "e1"})


def test_json_with_or_without_content_type(tmp_path: Path) -> None:
    body = json.dumps({"stream": "clicks", "entity_id": "e1", "x": 2}).encode()
    for value, ct in ((body, None), (b"  \n" + body, None), (body, "application/json")):
        assert _parse(_env(value, ct), _Ingestor(tmp_path)) == ("clicks", {"entity_id": "e1", "x": 2})
    nested = json.dumps({"stream": "clicks", "event": {"entity_id": "e2", "x": 3}}).encode()
    assert _parse(_env(nested), _Ingestor(tmp_path))[1] == {"entity_id": "e2", "x": 3}


@pytest.mark.parametrize(("value", "ct", "reason", "field"), [
    (b"{not json", None, "bad_json", None),
    (b"{not json", "application/json", "bad_json", None),
    (b"[1, 2]", None, "not_an_object", None),
    (json.dumps({"entity_id": "e"}).encode(), None, "missing_field", "stream"),
    (json.dumps({"stream": "clicks", "event": 5}).encode(), None, "not_an_object", "event"),
    (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", None, "payload is not a valid RawEvent", None),
    (_proto(stream=""), "application/x-protobuf", "missing_field", "stream"),
])
def test_unparseable_records_are_poison(tmp_path: Path, value: bytes, ct: str | None, reason: str,
                                        field: str | None) -> None:
    with pytest.raises(PoisonRecord) as err:
        _parse(_env(value, ct), _Ingestor(tmp_path))
    assert reason in err.value.message and err.value.field == field


def test_protobuf_of_an_unknown_stream(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        _parse(_env(_proto(stream="nope")), _Ingestor(tmp_path))


def test_one_parse_per_batch_gives_each_record_its_own_value() -> None:
    values = [b'{"stream": "clicks", "x": 1}', b' [1, 2] ', b'"text"', b'{"a": {"b": null}}']
    assert _loads_all(values) == [json.loads(v) for v in values]
    assert _loads_all([]) == []


@pytest.mark.parametrize("values", [
    [b'{"x": 1}', b'{"x": '],          # one record is not JSON
    [b'{"x": 1}, {"y": 2}', b''],        # two values in one record, none in the other
    [b'1, 2', b'3'],                     # two values in one record: the count is off
    [b'{"x": 1}', b'\xff'],              # not UTF-8
    ['{"x": 1}'.encode("utf-16")],       # valid alone (json detects UTF-16), not when joined
])
def test_one_parse_per_batch_gives_up_when_a_record_is_not_one_json_value(values: list[bytes]) -> None:
    assert _loads_all(values) is None
