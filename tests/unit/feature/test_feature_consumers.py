"""The feature service's batch handler (commit only after the Parquet flush; online updates go on while
the offline store fails, up to a bound), quality counting, and the value encoding both stores share."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2

from mlops.bus.envelope import Envelope, build_headers, decode_headers
from mlops.errors import Unavailable
from mlops.v1 import events_pb2
from services.feature.consumers import on_validated, prepare_validated
from services.feature.core import struct_to_dict
from services.feature.definitions import Definitions
from services.feature.offline import OfflineWriter
from services.feature.online import OnlineEvent, json_value
from services.feature.quality import Quality


class _Core:
    """The parts of FeatureCore the handler uses, with a real OfflineWriter."""

    def __init__(self, root: Path) -> None:
        self.offline = OfflineWriter(root)
        self.applied: list[str] = []

    def prepare(self, events: list[tuple[str, events_pb2.ValidatedEvent]]
                ) -> list[tuple[str, events_pb2.ValidatedEvent]]:
        return events

    async def apply_prepared(self, events: list[tuple[str, events_pb2.ValidatedEvent]]) -> None:
        for event_id, ev in events:
            self.applied.append(event_id)
            self.offline.add(ev.stream, {"entity_id": ev.entity_id, "event_time": ev.event_time.ToDatetime(),
                                         "event_id": event_id})


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []

    async def send(self, topic: str, value: bytes, **kwargs: object) -> str:
        self.sent.append((topic, kwargs.get("headers") or {}))  # type: ignore[arg-type]
        return "id"


def _env(i: int, value: bytes | None = None) -> Envelope:
    ev = events_pb2.ValidatedEvent(stream="s", event_id=f"e{i}", entity_id="a")
    ev.event_time.FromSeconds(1_700_000_000 + i)
    return Envelope(topic="events.validated", value=value if value is not None else ev.SerializeToString(),
                    headers=decode_headers(build_headers(f"e{i}", [])), partition=0, offset=i)


def _two_stage(core: _Core, handle: Callable[[Any, bool], Awaitable[bool]]
               ) -> Callable[[list[Envelope], bool], Awaitable[bool]]:
    """The handler as the batch consumer drives it: each batch prepared, then handled."""
    prepare = prepare_validated(core)  # type: ignore[arg-type]
    return lambda envelopes, final: handle(prepare(envelopes), final)


def test_offsets_wait_for_the_parquet_write(tmp_path: Path) -> None:
    core, producer = _Core(tmp_path), _Producer()
    handle = _two_stage(core, on_validated(core, producer, flush_s=3600, flush_rows=5, max_pending=100))  # type: ignore[arg-type]
    assert asyncio.run(handle([_env(0), _env(1)], False)) is False  # applied online, not yet durable offline
    assert core.applied == ["e0", "e1"] and core.offline.pending == 2
    assert asyncio.run(handle([_env(i) for i in range(2, 6)], False)) is True  # 6 rows >= 5: written
    assert core.offline.pending == 0 and len(list(tmp_path.rglob("part-*.parquet"))) == 1
    assert asyncio.run(handle([_env(6)], False)) is False
    assert asyncio.run(handle([], True)) is True  # the final call before the last commit flushes


def test_a_bad_record_is_dead_lettered_and_the_rest_applied(tmp_path: Path) -> None:
    core, producer = _Core(tmp_path), _Producer()
    handle = _two_stage(core, on_validated(core, producer, flush_s=0, flush_rows=5, max_pending=100))  # type: ignore[arg-type]
    assert asyncio.run(handle([_env(0), _env(1, b"\xff\xff not protobuf"), _env(2)], False)) is True
    assert core.applied == ["e0", "e2"]
    assert [t for t, _ in producer.sent] == ["events.deadletter"]
    assert producer.sent[0][1]["mlops-dlq-reason"].startswith("bad_payload")


def test_online_goes_on_while_the_offline_store_fails_then_stops(tmp_path: Path) -> None:
    blocker = tmp_path / "offline"
    blocker.write_text("a file where the store's directory should be")  # every write fails
    core, producer = _Core(blocker), _Producer()
    handle = _two_stage(core, on_validated(core, producer, flush_s=0, flush_rows=1, max_pending=3))  # type: ignore[arg-type]
    assert asyncio.run(handle([_env(0)], False)) is False  # the write failed: no commit, but applied
    assert asyncio.run(handle([_env(1)], False)) is False
    assert core.applied == ["e0", "e1"] and core.offline.pending == 2
    with pytest.raises(Unavailable):
        asyncio.run(handle([_env(2)], False))  # 3 rows wait: stop and retry rather than grow without bound
    blocker.unlink()
    assert asyncio.run(handle([], True)) is True and core.offline.pending == 0


def test_json_values_are_exact_and_valid() -> None:
    for value in (1.5, 0.1, 1e-300, 123456789.123, -0.0, "plain", 'quo"te', "back\\slash", "ünï", "tab\t", "", True,
                  False, None, 3, [1, "x"], {"k": 1}):
        assert json.loads(json_value(value)) == value, value
    assert json_value(float("nan")) == "null" and json_value(math.inf) == "null"


def test_struct_to_dict_matches_message_to_dict() -> None:
    s = struct_pb2.Struct()
    s.update({"a": 1.5, "b": "x", "c": True, "d": None, "e": [1, 2], "f": {"g": "h"}})
    assert struct_to_dict(s) == {"a": 1.5, "b": "x", "c": True, "e": [1.0, 2.0], "f": {"g": "h"}}


def test_quality_counts_missing_and_out_of_range() -> None:
    defs = Definitions.parse("""
views:
  - name: pay
    stream: "pay*"
    passthrough: [amount, shop]
    expect: {amount: {min: 0, max: 100}}
    aggregations: [{name: n, fn: count}, {name: lastc, fn: last, field: country}]
""")
    quality = Quality(None, defs)  # type: ignore[arg-type]
    events = [OnlineEvent("1", "a", "pay", 0, {"amount": 5.0, "shop": "s"}),
              OnlineEvent("2", "a", "pay", 0, {"amount": 500.0, "country": "DE"}),
              OnlineEvent("3", "a", "pay", 0, {"amount": "x"}),
              OnlineEvent("4", "a", "other", 0, {})]
    counts = quality.count(events)
    assert counts[("pay", "amount", "events")] == 3 and counts[("pay", "amount", "out_of_range")] == 2
    assert counts[("pay", "shop", "missing")] == 2 and counts[("pay", "country", "missing")] == 2
    assert ("pay", "shop", "out_of_range") not in counts


def test_rows_added_during_a_flush_wait_for_the_next_and_count_as_pending(tmp_path: Path) -> None:
    """The consumer's partitions buffer and flush concurrently: a row added while another flush writes
    is neither lost nor taken for durable."""
    from services.feature.offline import read_stream

    writer = OfflineWriter(tmp_path)

    def row(i: int) -> tuple[str, str, int, str, dict[str, object]]:
        return ("s", "a", 1_700_000_000_000_000 + i, f"e{i}", {"x": float(i)})

    async def scenario() -> None:
        writer.extend([row(i) for i in range(3)])
        first = asyncio.ensure_future(writer.flush())
        await asyncio.sleep(0)  # the first flush has taken its rows and is writing them
        assert writer.pending == 3
        writer.extend([row(3), row(4)])
        assert writer.pending == 5
        assert await first == 3
        assert writer.pending == 2  # the two added meanwhile are not durable yet
        assert await writer.flush() == 2
        assert writer.pending == 0

    asyncio.run(scenario())
    assert [r["event_id"] for r in read_stream(tmp_path, "s")] == [f"e{i}" for i in range(5)]


def test_a_flush_does_not_vouch_for_rows_another_lane_buffered_while_it_wrote(tmp_path: Path) -> None:
    """Lanes run concurrently: rows another partition buffers while this flush writes are not durable, so
    the flushing lane may not answer "committable" (its True would commit the other lane's offsets)."""
    core, producer = _Core(tmp_path), _Producer()
    handle = _two_stage(core, on_validated(core, producer, flush_s=3600, flush_rows=2, max_pending=100))  # type: ignore[arg-type]
    write = core.offline._write
    writing, release = threading.Event(), threading.Event()

    def slow_write(rows: list) -> None:  # type: ignore[type-arg]
        writing.set()
        release.wait(10)
        write(rows)

    core.offline._write = slow_write  # type: ignore[method-assign]

    async def lanes() -> tuple[bool, bool]:
        flushing = asyncio.create_task(handle([_env(0), _env(1)], False))  # 2 rows: this lane flushes
        await asyncio.to_thread(writing.wait, 10)
        buffered = asyncio.Event()
        add = core.offline.add

        def add_and_tell(*args: Any) -> None:
            add(*args)
            buffered.set()

        core.offline.add = add_and_tell  # type: ignore[method-assign]
        other = asyncio.create_task(handle([_env(2)], False))  # buffered while the flush writes
        await buffered.wait()  # row 2 is in the buffer (its lane then waits for the flush)
        release.set()
        return await flushing, await other

    flushed, other = asyncio.run(lanes())
    assert flushed is False  # row 2 was buffered, not written, when its flush finished
    assert other is True and core.offline.pending == 0  # the other lane's own flush (after the first) wrote it
