"""Validation of events against stream schemas: every rejection names the field and the reason."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mlops.errors import NotFound
from services.ingest.schema import (
    EventError,
    FieldSpec,
    SchemaStore,
    StreamSchema,
    _check_value,
    _fast_check,
    validate_event,
)

SCHEMA = StreamSchema(
    stream="loans",
    fields=[
        FieldSpec(name="income", type="float", min=0),
        FieldSpec(name="age", type="int", min=18, max=120),
        FieldSpec(name="purpose", type="string", enum=["car", "house"], required=False),
        FieldSpec(name="vip", type="bool", required=False),
    ],
)


def test_valid_event_is_normalised() -> None:
    ev = validate_event(SCHEMA, {"entity_id": 7, "income": 10, "age": 30.0, "purpose": "car",
                                 "event_time": "2026-01-02T03:04:05Z"})
    assert ev.entity_id == "7"
    assert ev.fields == {"income": 10.0, "age": 30, "purpose": "car"}
    assert ev.event_time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("event", "field", "reason"),
    [
        ({"income": 1, "age": 30}, "entity_id", "missing_field"),
        ({"entity_id": "a", "age": 30}, "income", "missing_field"),
        ({"entity_id": "a", "income": "lots", "age": 30}, "income", "wrong_type"),
        ({"entity_id": "a", "income": True, "age": 30}, "income", "wrong_type"),
        ({"entity_id": "a", "income": -1, "age": 30}, "income", "out_of_range"),
        ({"entity_id": "a", "income": 1, "age": 30.5}, "age", "wrong_type"),
        ({"entity_id": "a", "income": 1, "age": 121}, "age", "out_of_range"),
        ({"entity_id": "a", "income": 1, "age": 30, "purpose": "boat"}, "purpose", "not_in_enum"),
        ({"entity_id": "a", "income": 1, "age": 30, "vip": 1}, "vip", "wrong_type"),
        ({"entity_id": "a", "income": 1, "age": 30, "colour": "red"}, "colour", "unknown_field"),
        ({"entity_id": "a", "income": 1, "age": 30, "event_time": "yesterday"}, "event_time", "bad_time"),
        ({"entity_id": "a", "income": float("nan"), "age": 30}, "income", "wrong_type"),
        ({"entity_id": "a", "income": 1, "age": 30, "event_id": ""}, "event_id", "bad_event_id"),
    ],
)
def test_invalid_event_names_field_and_reason(event: dict, field: str, reason: str) -> None:
    with pytest.raises(EventError) as err:
        validate_event(SCHEMA, event)
    assert err.value.field == field
    assert err.value.reason == reason
    assert field in err.value.message


def test_non_object_is_rejected() -> None:
    with pytest.raises(EventError) as err:
        validate_event(SCHEMA, [1, 2])
    assert err.value.reason == "not_an_object"


def test_schema_store_versions_and_survives_reopen(tmp_path) -> None:
    store = SchemaStore(tmp_path)
    assert store.put("loans", SCHEMA).version == 1
    assert store.put("loans", SCHEMA).version == 2
    reopened = SchemaStore(tmp_path)
    assert reopened.get("loans").version == 2
    assert [f.name for f in reopened.get("loans").fields] == ["income", "age", "purpose", "vip"]
    with pytest.raises(NotFound):
        reopened.get("other")


def test_duplicate_field_names_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        StreamSchema(fields=[FieldSpec(name="a", type="int"), FieldSpec(name="a", type="float")])


@pytest.mark.parametrize("spec", [
    {"name": "f", "type": "float"}, {"name": "f", "type": "float", "min": 0, "max": 10},
    {"name": "i", "type": "int"}, {"name": "i", "type": "int", "min": -1, "max": 3},
    {"name": "b", "type": "bool"}, {"name": "s", "type": "string"},
    {"name": "e", "type": "string", "enum": ["DE", "FR"]}, {"name": "p", "type": "string", "pii": "mask"},
])
def test_the_fast_checks_give_what_the_full_check_gives(spec: dict[str, object]) -> None:
    field = FieldSpec.model_validate(spec)
    fast = _fast_check(field)
    for value in (0, 1, 2.0, 2.5, -3, -0.5, 11, 11.0, 1e300, float("inf"), float("-inf"), float("nan"), True, False,
                  "DE", "FR", "x", "", "mail me at a@b.example", None, [1], {"k": 1}):
        try:
            want: object = ("ok", _check_value(field, value))
        except EventError as exc:
            want = ("error", exc.message, exc.field, exc.reason)
        try:
            got: object = ("ok", fast(value))
        except EventError as exc:
            got = ("error", exc.message, exc.field, exc.reason)
        if want[0] == "ok" and isinstance(want[1], float) and want[1] != want[1]:
            assert got[0] == "ok" and got[1] != got[1]
        else:
            assert got == want, value
            assert type(got[1]) is type(want[1]), value
