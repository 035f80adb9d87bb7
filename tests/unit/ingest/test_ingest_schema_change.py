"""Re-declaring a stream's schema: the diff (added, dropped, retyped), which serving model versions read what a
change drops or retypes, the refusal with the diff, a forced change (reason needed, audited), a dry run, and a
registry that cannot be asked (refused as unavailable, never guessed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.auth.guard import current_principal
from mlops.auth.tokens import Principal
from mlops.errors import Conflict, InvalidArgument, Unavailable
from mlops.v1 import events_pb2
from services.ingest import schema_diff
from services.ingest.schema import FieldSpec, SchemaStore, StreamSchema
from services.ingest.schema_change import RegistryReaders, SchemaChanges
from services.ingest.schema_diff import Reader


def schema(**fields: str) -> StreamSchema:
    return StreamSchema(fields=[FieldSpec(name=n, type=t) for n, t in fields.items()])  # type: ignore[arg-type]


V1 = schema(salary="float", age="int", city="string")
READERS = [
    Reader("loans", "3", "production", ("salary", "age")),
    Reader("loans", "4", "canary", ("salary",)),
    Reader("loans", "2", "archived", ("city",)),  # not serving: reads nothing
    Reader("churn", "1", "candidate", ("city",)),  # not answering traffic
]


class FixedReaders:
    def __init__(self, readers: list[Reader]) -> None:
        self.readers, self.calls = readers, 0

    async def serving(self) -> list[Reader]:
        self.calls += 1
        return self.readers


class Recorder:
    started = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    async def send(self, topic: str, message: object, *, key: str, event_id: str) -> str:
        self.sent.append((topic, message))
        return event_id


def test_the_diff_names_added_dropped_and_retyped_fields() -> None:
    change = schema_diff.diff("s", StreamSchema(fields=V1.fields, version=3),
                              schema(salary="string", city="string", zip="string"))
    assert (change.from_version, change.added, change.dropped) == (3, ["zip"], ["age"])
    assert change.retyped == [schema_diff.Retyped("salary", "float", "string")]
    read_by = schema_diff.readers_of(change, READERS)
    assert read_by == {"age": ["loans v3 (production)"], "salary": ["loans v3 (production)", "loans v4 (canary)"]}
    plan = schema_diff.plan(change, read_by)
    assert plan["breaking"] and plan["retyped"] == [{"field": "salary", "from": "float", "to": "string"}]
    city_retyped = schema_diff.diff("s", V1, schema(salary="float", age="int", city="int"))
    assert city_retyped.touched == ["city"]
    assert schema_diff.readers_of(city_retyped, READERS) == {}  # only versions that serve no traffic read it


@pytest.fixture
def store(tmp_path: Path) -> SchemaStore:
    s = SchemaStore(tmp_path / "schemas")
    s.put("loans", V1)
    return s


async def test_adding_a_field_never_asks_the_registry(store: SchemaStore) -> None:
    readers = FixedReaders(READERS)
    outcome = await SchemaChanges(store, readers).put("loans", schema(salary="float", age="int", city="string",
                                                                      zip="string"))
    assert readers.calls == 0 and outcome.schema is not None and outcome.schema.version == 2
    assert outcome.to_dict()["changes"]["added"] == ["zip"]


async def test_dropping_a_field_a_serving_version_reads_is_refused_with_the_diff(store: SchemaStore) -> None:
    changes = SchemaChanges(store, FixedReaders(READERS))
    with pytest.raises(Conflict) as err:
        await changes.put("loans", schema(salary="float", city="string"))
    assert "drops age" in err.value.message and "loans v3 (production)" in err.value.message
    assert err.value.details is not None and err.value.details["dropped"] == ["age"]
    assert err.value.to_body()["error"]["details"]["read_by"] == {"age": ["loans v3 (production)"]}
    assert store.get("loans").version == 1  # nothing stored
    dry = await changes.put("loans", schema(salary="float", city="string"), dry_run=True)
    assert dry.schema is None and dry.to_dict()["changes"]["breaking"] and store.get("loans").version == 1
    dropped_unread = await changes.put("loans", schema(salary="float", age="int"))  # city: no serving reader
    assert dropped_unread.schema is not None and dropped_unread.plan["dropped"] == ["city"]


async def test_a_forced_change_needs_a_reason_and_is_audited(store: SchemaStore) -> None:
    producer = Recorder()
    changes = SchemaChanges(store, FixedReaders(READERS), producer)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as err:
        await changes.put("loans", schema(salary="string", age="int", city="string"), force=True)
    assert err.value.field == "reason"
    token = current_principal.set(Principal(token_id="t-3", name="dana", role="admin"))
    try:
        outcome = await changes.put("loans", schema(salary="string", age="int", city="string"), force=True,
                                    reason="salary arrives as text upstream now")
    finally:
        current_principal.reset(token)
    assert outcome.schema is not None and outcome.schema.fields[0].type == "string"
    (topic, record), = producer.sent
    assert topic == "audit.log" and isinstance(record, events_pb2.AuditRecord)
    assert (record.action, record.target, record.actor, record.actor_id) == (
        "schema.forced", "stream:loans", "dana", "t-3")
    assert record.reason.startswith("salary arrives as text upstream now [retypes salary (float -> string)")


async def test_a_change_checked_against_an_older_version_is_not_stored(store: SchemaStore) -> None:
    with pytest.raises(Conflict):
        store.put("loans", V1, expect_version=0)
    assert store.put("loans", V1, expect_version=1).version == 2


async def test_a_registry_that_does_not_answer_refuses_a_dropping_change(store: SchemaStore) -> None:
    readers = RegistryReaders("127.0.0.1:9", timeout_s=2.0)  # discard port: nothing listens there
    try:
        changes = SchemaChanges(store, readers)
        with pytest.raises(Unavailable):
            await changes.put("loans", schema(salary="float"))
        assert store.get("loans").version == 1
        added = await changes.put("loans", schema(salary="float", age="int", city="string", zip="string"))
        assert added.schema is not None and added.schema.version == 2  # additive: the registry is not needed
    finally:
        await readers.close()
