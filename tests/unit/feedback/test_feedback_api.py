"""The REST adapter and the core's submit/join steps, with an in-memory producer and store (no servers)."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import pytest

from mlops.service import Service
from mlops.settings import PlatformSettings, service_settings
from mlops.v1 import events_pb2
from services.feedback import http
from services.feedback.core import ClaimBusy, FeedbackCore
from services.feedback.join import Outcome, Quality
from services.feedback.settings import FeedbackSettings
from services.feedback.store import JoinStep


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
    step: JoinStep = field(default_factory=lambda: JoinStep("stored"))
    finished: list[tuple[str, Outcome]] = field(default_factory=list)

    async def on_feedback(self, *_: object) -> JoinStep:
        return self.step

    async def on_prediction(self, *_: object) -> JoinStep:
        return self.step

    async def finish(self, pid: str, model: str, version: str, result: Outcome) -> Quality | None:
        self.finished.append((pid, result))
        return Quality.from_hash(model, version, {"count": "1", "reward_sum": str(result.reward)})

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


async def test_a_join_emits_reward_and_label_then_finishes() -> None:
    pred = events_pb2.Prediction(prediction_id="p1", model="m", version="1", outputs=[0.3, 0.7])
    fb = events_pb2.Feedback(prediction_id="p1", label=1)
    core, producer, store = _core(FakeStore(JoinStep("joined", pred.SerializeToString(), fb.SerializeToString())))
    await core.on_feedback(fb, fb.SerializeToString(), 0, 5)
    assert [(t, e) for t, _, e in producer.sent] == [("rewards", "reward:p1"), ("labels", "label:p1")]
    assert producer.keys == ["p1", "m"], "labels are keyed by model: one ordered stream per version for drift"
    assert store.finished[0][1].reward == 1.0


async def test_reward_only_feedback_emits_no_label() -> None:
    pred = events_pb2.Prediction(prediction_id="p1", model="m", version="1", outputs=[0.3, 0.7])
    fb = events_pb2.Feedback(prediction_id="p1", reward=0.25)
    core, producer, _ = _core(FakeStore(JoinStep("joined", pred.SerializeToString(), fb.SerializeToString())))
    await core.on_prediction(pred, pred.SerializeToString())
    assert [t for t, _, _ in producer.sent] == ["rewards"]


async def test_busy_claim_is_retried_and_held_or_duplicate_emit_nothing() -> None:
    fb = events_pb2.Feedback(prediction_id="p1", label=1)
    core, producer, _ = _core(FakeStore(JoinStep("busy")))
    with pytest.raises(ClaimBusy):
        await core.on_feedback(fb, fb.SerializeToString(), 0, 1)
    for result in ("held", "duplicate", "stored"):
        core, producer, _ = _core(FakeStore(JoinStep(result)))  # type: ignore[arg-type]
        await core.on_feedback(fb, fb.SerializeToString(), 0, 1)
        assert producer.sent == []


async def test_shadow_predictions_are_not_joined() -> None:
    pred = events_pb2.Prediction(prediction_id="p1", model="m", version="1", shadow=True)
    core, producer, _ = _core(FakeStore(JoinStep("joined", b"", b"")))
    await core.on_prediction(pred, pred.SerializeToString())
    assert producer.sent == []
