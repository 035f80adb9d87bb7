"""The REST adapter, the core's submit and batch join steps and the consumers' prepare stage, with an
in-memory producer and store (no servers)."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import pytest

from mlops.bus.envelope import Envelope
from mlops.service import Service
from mlops.settings import PlatformSettings, service_settings
from mlops.v1 import events_pb2
from services.feedback import http
from services.feedback.consumers import prepare_feedback, prepare_predictions
from services.feedback.core import FeedbackCore, JoinConflict
from services.feedback.join import Quality
from services.feedback.plan import FeedbackItem, Plan, Seen
from services.feedback.settings import FeedbackSettings


@dataclass
class FakeProducer:
    sent: list[tuple[str, object, str | None]] = field(default_factory=list)
    keys: list[object] = field(default_factory=list)

    async def send(self, topic: str, message: object, *, key: object = None, event_id: str | None = None) -> str:
        self.sent.append((topic, message, event_id))
        self.keys.append(key)
        return event_id or ""

    async def send_many(self, topic: str, items: list[tuple[str, object, str]]) -> None:
        self.sent.extend((topic, message, event_id) for _, message, event_id in items)


@dataclass
class FakeStore:
    """What Redis holds (``seen``); the first ``conflicts`` writes find it changed (then ``after_conflict``)."""

    seen: dict[str, Seen] = field(default_factory=dict)
    conflicts: int = 0
    after_conflict: dict[str, Seen] | None = None
    reads: int = 0
    applied: list[Plan] = field(default_factory=list)

    async def read_for_feedback(self, items: list[FeedbackItem]) -> dict[str, Seen]:
        self.reads += 1
        return self.seen

    async def apply(self, plan: Plan, now: float) -> list[Quality] | None:
        self.applied.append(plan)
        if self.conflicts:
            self.conflicts -= 1
            if self.after_conflict is not None:
                self.seen = self.after_conflict
            return None
        return [Quality.from_hash(m, v, {"count": "1"}) for m, v in plan.quality]

    async def quality(self, model: str, version: str) -> Quality | None:
        return None


def _core(store: FakeStore | None = None) -> tuple[FeedbackCore, FakeProducer, FakeStore]:
    producer, store = FakeProducer(), store or FakeStore()
    return FeedbackCore(store, producer, FeedbackSettings(), clock=lambda: 1000.0), producer, store  # type: ignore[arg-type]


@pytest.fixture
def client_and_producer() -> tuple[httpx.AsyncClient, FakeProducer]:
    core, producer, _ = _core()
    service = Service(PlatformSettings(), service_settings("feedback"), kafka=False)
    service.add_http(http.router(core))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://t"), producer


async def test_post_one_object(client_and_producer: tuple[httpx.AsyncClient, FakeProducer]) -> None:
    client, producer = client_and_producer
    r = await client.post("/v1/feedback", json={"prediction_id": "p1", "label": 1})
    assert r.status_code == 202 and r.json() == {"accepted": 1}
    topic, message, event_id = producer.sent[0]
    assert topic == "feedback.raw" and event_id == "feedback:p1"
    assert isinstance(message, events_pb2.Feedback) and message.label == 1 and message.time.seconds == 1000


async def test_post_a_list(client_and_producer: tuple[httpx.AsyncClient, FakeProducer]) -> None:
    client, producer = client_and_producer
    body = [{"prediction_id": "a", "reward": 1}, {"prediction_id": "b", "value": 3}]
    r = await client.post("/v1/feedback", json=body)
    assert r.json() == {"accepted": 2}
    assert [e for _, _, e in producer.sent] == ["feedback:a", "feedback:b"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"label": 1}, "prediction_id"),
        ({"prediction_id": "p"}, "label|reward|value"),
        ([{"prediction_id": "a", "label": 1}, {"prediction_id": "b", "reward": "x"}], "1.reward"),
        ([{"prediction_id": "a", "label": 1}, {"prediction_id": "b"}], "1.label|reward|value"),
        ({"prediction_id": "p", "label": 1, "extra": 2}, "extra"),
        ([], "items"),
        (5, "body"),
    ],
)
async def test_bad_input_is_400_naming_the_field(
    client_and_producer: tuple[httpx.AsyncClient, FakeProducer], body: object, field: str
) -> None:
    client, producer = client_and_producer
    r = await client.post("/v1/feedback", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["field"] == field
    assert producer.sent == []


async def test_broken_json_is_400_naming_the_body(client_and_producer: tuple[httpx.AsyncClient, FakeProducer]) -> None:
    client, _ = client_and_producer
    r = await client.post("/v1/feedback", content=b"{broken", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "body"
    assert (await client.get("/openapi.json")).status_code == 200


async def test_unknown_quality_is_404(client_and_producer: tuple[httpx.AsyncClient, FakeProducer]) -> None:
    client, _ = client_and_producer
    r = await client.get("/v1/quality/m/1")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_grpc_batches_name_items_field() -> None:
    core, _, _ = _core()
    with pytest.raises(Exception) as err:
        await core.submit([events_pb2.Feedback(prediction_id="a", label=1), events_pb2.Feedback()], batch_field="items")
    assert getattr(err.value, "field", None) == "items.1.prediction_id"


async def test_a_batch_is_read_planned_written_once_then_sent_once() -> None:
    pred = events_pb2.Prediction(prediction_id="p1", model="m", version="1", outputs=[0.3, 0.7])
    fb = events_pb2.Feedback(prediction_id="p1", label=1)
    store = FakeStore({"p1": Seen(prediction=pred.SerializeToString())})
    core, producer, _ = _core(store)
    await core.join_feedback([FeedbackItem("p1", fb.SerializeToString(), "feedback.raw/0/5", 0, 5)])
    assert [(t, e) for t, _, e in producer.sent] == [("rewards", "reward:p1"), ("labels", "label:p1")]
    assert store.reads == 1 and len(store.applied) == 1
    assert store.applied[0].quality[("m", "1")].floats["reward_sum"] == 1.0


async def test_a_conflicting_write_is_planned_again_on_a_fresh_read() -> None:
    fb = events_pb2.Feedback(prediction_id="p1", reward=0.5)
    pred = events_pb2.Prediction(prediction_id="p1", model="m", version="1")
    store = FakeStore({"p1": Seen()}, conflicts=1)
    store.after_conflict = {"p1": Seen(prediction=pred.SerializeToString())}
    core, producer, _ = _core(store)
    await core.join_feedback([FeedbackItem("p1", fb.SerializeToString(), "s", 0, 1)])
    assert store.reads == 2 and len(store.applied) == 2
    assert store.applied[0].holds and store.applied[1].joins  # held at first; joined once its prediction came
    assert [e for _, _, e in producer.sent] == ["reward:p1"]


async def test_state_that_never_settles_fails_the_batch_for_a_retry() -> None:
    fb = events_pb2.Feedback(prediction_id="p1", reward=0.5)
    core, producer, _ = _core(FakeStore({"p1": Seen()}, conflicts=100))
    with pytest.raises(JoinConflict):
        await core.join_feedback([FeedbackItem("p1", fb.SerializeToString(), "s", 0, 1)])
    assert producer.sent == []


async def test_held_and_duplicate_feedback_emit_nothing() -> None:
    fb = events_pb2.Feedback(prediction_id="p1", label=1).SerializeToString()
    for seen in (Seen(), Seen(state="joined", by="other")):
        core, producer, _ = _core(FakeStore({"p1": seen}))
        await core.join_feedback([FeedbackItem("p1", fb, "s", 0, 1)])
        assert producer.sent == []


def test_shadow_and_bad_predictions_are_not_joined() -> None:
    shadow = events_pb2.Prediction(prediction_id="p1", model="m", version="1", shadow=True)
    envelopes = [Envelope("predictions", shadow.SerializeToString(), partition=0, offset=1),
                 Envelope("predictions", events_pb2.Prediction(model="m").SerializeToString(), partition=0, offset=2),
                 Envelope("predictions", b"\xff\xff", partition=0, offset=3)]
    batch = prepare_predictions(envelopes)
    assert batch.items == [] and batch.shadow == 1 and [e.offset for e, _, _ in batch.bad] == [2, 3]


def test_invalid_feedback_records_are_dead_lettered_naming_the_field() -> None:
    good = events_pb2.Feedback(prediction_id="p1", reward=1.0).SerializeToString()
    bad = events_pb2.Feedback(prediction_id="p2").SerializeToString()
    batch = prepare_feedback([Envelope("feedback.raw", good, partition=2, offset=1),
                              Envelope("feedback.raw", bad, partition=2, offset=2)])
    assert [i.source for i in batch.items] == ["feedback.raw/2/1"]
    assert [(e.offset, f) for e, _, f in batch.bad] == [(2, "label|reward|value")]
