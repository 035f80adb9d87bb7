"""The outbox that sends Prediction records after the answer: nothing dropped while the process runs (failed
sends are retried, a full outbox makes predict wait and then refuse), everything sent on a graceful stop,
each record sent in its own request's context, latency samples added to the shared histogram."""

from __future__ import annotations

import asyncio
import contextvars
import random

import pytest

from mlops.errors import Unavailable
from mlops.v1 import events_pb2
from services.bandit_router.core import Router
from services.bandit_router.outbox import Outbox
from services.bandit_router.settings import RouterSettings
from services.bandit_router.spec import EndpointSpec, PolicySpec, VariantSpec
from tests.unit.bandit_router.bandit_router_fakes import Features, Inference, MemoryStore, Registry

ROW = {"a": 1.0, "b": 2.0, "c": 3.0}
REQUEST = contextvars.ContextVar("request", default="")


class FlakyPublish:
    """Fails the first ``failures`` sends; remembers each record with the request context it was sent in."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, record: events_pb2.Prediction) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("broker down")
        self.sent.append((record.prediction_id, REQUEST.get()))


def _record(i: int) -> events_pb2.Prediction:
    return events_pb2.Prediction(prediction_id=f"p{i}", endpoint="ep", variant="a", model="m", version="1")


async def test_records_are_sent_in_their_requests_context_and_retried_until_acknowledged() -> None:
    publish = FlakyPublish(failures=3)
    outbox = Outbox(publish, MemoryStore(), linger_s=0.001)  # type: ignore[arg-type]
    for i in range(5):
        REQUEST.set(f"request-{i}")
        await outbox.put(_record(i))
    REQUEST.set("")
    for _ in range(200):
        if len(publish.sent) == 5:
            break
        await asyncio.sleep(0.01)
    assert sorted(publish.sent) == [(f"p{i}", f"request-{i}") for i in range(5)]
    assert outbox.held == 0
    await outbox.drain(timeout_s=1)


async def test_a_full_outbox_makes_predict_wait_then_refuse_instead_of_dropping() -> None:
    publish = FlakyPublish()
    publish.gate = asyncio.Event()  # the broker does not answer
    outbox = Outbox(publish, MemoryStore(), linger_s=0.0, max_records=2, put_timeout_s=0.05)  # type: ignore[arg-type]
    await outbox.put(_record(0))
    await outbox.put(_record(1))
    with pytest.raises(Unavailable):
        await outbox.put(_record(2))
    # Room comes back when the broker acknowledges: a waiting put then goes through.
    waiting = asyncio.ensure_future(outbox.put(_record(3)))
    await asyncio.sleep(0.01)
    publish.gate.set()
    await asyncio.wait_for(waiting, 1)
    await outbox.drain(timeout_s=1)
    assert sorted(p for p, _ in publish.sent) == ["p0", "p1", "p3"]


async def test_stop_sends_what_is_held_and_latencies_reach_the_histogram() -> None:
    store = MemoryStore()
    publish = FlakyPublish(failures=1)
    outbox = Outbox(publish, store, linger_s=10.0, latency_flush_s=10.0)  # type: ignore[arg-type]
    await outbox.put(_record(0))
    outbox.count_latency("ep", "a", 0)
    outbox.count_latency("ep", "a", 0)
    outbox.count_latency("ep", "b", 4)
    await outbox.drain(timeout_s=5)  # no linger on stop, and the failed send is retried
    assert publish.sent == [("p0", "")]
    assert store.endpoints["ep"].latency == {"a|0": 2, "b|4": 1}


async def test_predict_counts_latency_and_a_failed_variants_decision_is_taken_back() -> None:
    store, inference = MemoryStore(), Inference()
    router = Router(store, Registry(), Features(), inference, None, RouterSettings(latency_flush_s=10.0),  # type: ignore[arg-type]
                    rng=random.Random(0))
    await router.put_endpoint(EndpointSpec("ep", (VariantSpec("a", "m", "1", weight=1),
                                                  VariantSpec("b", "m", "2", weight=1)), PolicySpec("fixed", {})))
    inference.failing.add("2")
    results = [await router.predict("ep", features=ROW) for _ in range(20)]
    await router.drain()
    assert {r.variant for r in results} == {"a"}
    a, b = await store.stats("ep", ["a", "b"], latency=True)
    assert (a.decisions, a.pending, sum(a.latency)) == (20, 20, 20)
    assert (b.decisions, b.pending, sum(b.latency)) == (0, 0, 0) and b.errors > 0
    assert set(store.endpoints["ep"].pending) == {r.prediction_id for r in results}


async def test_a_record_is_journaled_before_put_returns_and_forgotten_once_acknowledged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from mlops.bus.journal import Journal, read_segment

    publish = FlakyPublish(failures=2)
    publish.gate = asyncio.Event()
    journal = Journal(tmp_path)
    outbox = Outbox(publish, MemoryStore(), linger_s=0.001, journal=journal)  # type: ignore[arg-type]
    for i in range(3):
        await outbox.put(_record(i))
    # Nothing is acknowledged yet, and all three are on disk: a crash now loses none of them.
    (path,) = tmp_path.glob("*.journal")
    records, acked = read_segment(path.read_bytes())
    assert sorted(records) == [f"prediction:p{i}" for i in range(3)] and not acked
    assert events_pb2.Prediction.FromString(records["prediction:p1"].value) == _record(1)
    assert records["prediction:p1"].key == "m:1"
    publish.gate.set()
    for _ in range(500):
        if journal.outstanding == 0:
            break
        await asyncio.sleep(0.01)
    assert journal.outstanding == 0 and len(publish.sent) == 3  # failed sends stayed journaled until retried
    _, acked = read_segment(path.read_bytes())
    assert acked == {f"prediction:p{i}" for i in range(3)}
    await outbox.drain(timeout_s=1)
    assert not list(tmp_path.glob("*.journal"))
