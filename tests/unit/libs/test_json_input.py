"""Caller JSON read with bounds: nesting, long integers and syntax errors are 400s (InvalidArgument), and
ordinary documents come back as ``json.loads`` reads them."""

from __future__ import annotations

import json

import pytest

from mlops.errors import InvalidArgument
from mlops.json_input import MAX_DEPTH, NotJson, loads, nested_deeper_than


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("doc", [
    '{"a": 1, "b": [1, 2, {"c": "x"}], "d": null}',
    json.dumps([{"event_id": f"e{i}", "v": i * 1.5, "tags": ["a", "b"]} for i in range(500)]),
    '"just a string with [[[[ and {{{{"',
    json.dumps({"s": "[" * 500}),  # brackets inside strings are no nesting
    _nested(MAX_DEPTH),
    "1" * 4300,
])
def test_ordinary_documents_read_as_json_loads_reads_them(doc: str) -> None:
    assert loads(doc) == json.loads(doc)
    assert loads(doc.encode()) == json.loads(doc)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 200, 5_000, 200_000])
def test_nesting_past_the_bound_is_400(depth: int) -> None:
    with pytest.raises(InvalidArgument, match="nested deeper") as err:
        loads('{"a": ' + _nested(depth) + "}", field="payload")
    assert err.value.field == "payload"
    assert not isinstance(err.value, NotJson)


def test_objects_count_as_levels_too() -> None:
    doc = '{"a": ' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1)
    with pytest.raises(InvalidArgument, match="nested deeper"):
        loads(doc)


@pytest.mark.parametrize("doc", ["9" * 5000, '{"n": -' + "1" * 100_000 + "}"])
def test_integers_too_long_to_convert_are_400(doc: str) -> None:
    with pytest.raises(InvalidArgument, match="too long"):
        loads(doc)


@pytest.mark.parametrize("doc", [b"{", b"nope", b'{"a": 1,}', b"\xff\xfe{"])
def test_what_is_no_json_is_not_json(doc: bytes) -> None:
    with pytest.raises(NotJson):
        loads(doc)


def test_nested_deeper_than_walks_levels() -> None:
    assert not nested_deeper_than(json.loads(_nested(3)), 3)
    assert nested_deeper_than(json.loads(_nested(4)), 3)
    assert not nested_deeper_than([{"a": [1]}, {"b": 2}], 3)
    assert nested_deeper_than([{"a": [{}]}], 3)
    assert not nested_deeper_than(1, 0)
