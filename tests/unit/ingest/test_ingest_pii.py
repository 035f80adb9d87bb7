"""The PII guard: declared string fields with e-mails, phone numbers or card numbers are refused, masked
or hashed by policy; other text passes untouched."""

from __future__ import annotations

import pytest

from services.ingest import pii
from services.ingest.schema import EventError, FieldSpec, StreamSchema, validate_event


def _schema(policy: str) -> StreamSchema:
    return StreamSchema(stream="s", fields=[FieldSpec(name="note", type="string", pii=policy)])  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "kinds"), [
    ("write to ana.lima@example.org please", ["email"]),
    ("card 4111 1111 1111 1111 exp 12/29", ["card"]),
    ("call +44 20 7946 0958 after six", ["phone"]),
    ("order 1234 shipped, 3 items", []),
    ("not a card 4111 1111 1111 1112", []),  # fails the Luhn check and is too long for a phone number
])
def test_find(text: str, kinds: list[str]) -> None:
    assert pii.find(text) == kinds


def test_reject_names_the_field_and_the_kind() -> None:
    with pytest.raises(EventError) as err:
        validate_event(_schema("reject"), {"entity_id": "a", "note": "mail me: bob@example.com"})
    assert err.value.field == "note" and err.value.reason == "pii" and "email" in err.value.message


def test_mask_keeps_the_rest_of_the_text() -> None:
    ev = validate_event(_schema("mask"), {"entity_id": "a", "note": "bob@example.com paid with 4111-1111-1111-1111"})
    assert ev.fields["note"] == "***@*** paid with ****1111"


def test_hash_is_stable_and_hides_the_value() -> None:
    a = validate_event(_schema("hash"), {"entity_id": "a", "note": "bob@example.com"}).fields["note"]
    b = validate_event(_schema("hash"), {"entity_id": "b", "note": "bob@example.com"}).fields["note"]
    assert a == b and a.startswith("sha256:") and "bob" not in a


def test_clean_text_passes_unchanged() -> None:
    assert validate_event(_schema("reject"), {"entity_id": "a", "note": "hello"}).fields["note"] == "hello"
