"""feedback against the real stack: predictions and feedback in either order, duplicated and redelivered,
end in exactly one reward per prediction (and one label when labelled); feedback whose prediction never
comes is dead-lettered by the sweep; quality per model version is served."""

from __future__ import annotations

import asyncio
import collections
import uuid

import grpc
import httpx
import pytest
from redis.asyncio import Redis

from mlops.bus import topics
from mlops.bus.producer import Producer
from mlops.grpc_util import channel
from mlops.settings import PlatformSettings
from mlops.v1 import events_pb2, feedback_pb2, feedback_pb2_grpc
from tests.integration.kafka_util import header, read_until
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

N = 120


def _prediction(pid: str, model: str, p: float) -> events_pb2.Prediction:
    return events_pb2.Prediction(
        prediction_id=pid, endpoint="ep", variant="a", model=model, version="1", features={"x": p}, outputs=[1 - p, p]
    )


def _feedback(pid: str, i: int) -> dict[str, object]:
    """Every third labelled, every third a reward, every third a business value."""
    outcome = [{"label": 1}, {"reward": 0.5}, {"value": 2}][i % 3]
    return {"prediction_id": pid, **outcome}


async def test_exactly_one_reward_per_prediction_in_any_order(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    model = f"fb{run}"
    pids = [f"{run}-{i}" for i in range(N)]
    preds = {pid: _prediction(pid, model, (i % 10) / 10 + 0.05) for i, pid in enumerate(pids)}
    early, late = pids[: N // 2], pids[N // 2 :]
    producer = Producer(PlatformSettings(), client_id="test-feedback")
    await producer.start()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            url = stack.url("feedback", "/v1/feedback")
            body = [_feedback(pid, i) for i, pid in enumerate(early)]
            r = await http.post(url, json=body + body)  # before the predictions, and each twice
            assert r.status_code == 202 and r.json() == {"accepted": 2 * len(early)}, r.text
            await asyncio.sleep(1.0)
            await producer.send_many(topics.PREDICTIONS, [(pid, preds[pid], f"prediction:{pid}") for pid in pids])
            r = await http.post(url, json=[_feedback(pid, i) for i, pid in enumerate(late[:30], len(early))])
            assert r.json() == {"accepted": 30}
            async with channel(stack.grpc("feedback")) as ch:
                stub = feedback_pb2_grpc.FeedbackServiceStub(ch)
                items = [events_pb2.Feedback(**_feedback(pid, i)) for i, pid in enumerate(late[30:], len(early) + 30)]
                assert (await stub.SendFeedback(feedback_pb2.FeedbackBatch(items=items))).accepted == len(items)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.SendFeedback(feedback_pb2.FeedbackBatch(items=[events_pb2.Feedback(prediction_id="x")]))
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # Redelivered records, byte for byte with the same event_ids: nothing new may come out.
            await producer.send_many(topics.PREDICTIONS, [(pid, preds[pid], f"prediction:{pid}") for pid in pids[::3]])
            for i, pid in enumerate(pids[::7]):
                fb = events_pb2.Feedback(**_feedback(pid, i * 7))  # type: ignore[arg-type]
                await producer.send(topics.FEEDBACK_RAW, fb, key=pid, event_id=f"feedback:{pid}")

            def all_rewards(recs: list) -> bool:
                return len({header(x, "event_id") for x in recs} & {f"reward:{p}" for p in pids}) == N

            await read_until(stack.kafka, topics.REWARDS, all_rewards, timeout_s=90)
            await asyncio.sleep(2.0)  # room for a stray duplicate to show up
            rewards = await read_until(stack.kafka, topics.REWARDS, lambda _: False, timeout_s=3)
            mine = [x for x in rewards if (header(x, "event_id") or "").startswith(f"reward:{run}-")]
            per_prediction = collections.Counter(events_pb2.Reward.FromString(x.value).prediction_id for x in mine)
            assert set(per_prediction) == set(pids)
            assert set(per_prediction.values()) == {1}, "exactly one reward per prediction"
            for x in mine:
                reward = events_pb2.Reward.FromString(x.value)
                i = pids.index(reward.prediction_id)
                p = preds[reward.prediction_id].outputs[1]
                assert reward.reward == [1.0 if p >= 0.5 else 0.0, 0.5, 2.0][i % 3]
                assert (reward.model, reward.version, reward.endpoint, reward.variant) == (model, "1", "ep", "a")

            labels = await read_until(stack.kafka, topics.LABELS, lambda _: False, timeout_s=3)
            labelled = collections.Counter(
                events_pb2.Label.FromString(x.value).prediction_id
                for x in labels
                if (header(x, "event_id") or "").startswith(f"label:{run}-")
            )
            assert labelled == {pid: 1 for i, pid in enumerate(pids) if i % 3 == 0}
            assert {x.key for x in labels if (header(x, "event_id") or "").startswith(f"label:{run}-")} == {
                model.encode()}, "labels are keyed by model"

            q = (await http.get(stack.url("feedback", f"/v1/quality/{model}/1"))).json()
            assert q["count"] == N and q["labeled"] == len(labelled) and q["value_count"] == N // 3
            assert q["accuracy"] == pytest.approx(0.5) and q["log_loss"] is not None
            # Labelled ones: p in {0.05, 0.35, 0.65, 0.95} (i % 3 == 0 of (i % 10) / 10 + 0.05), label 1.
            assert 0.0 < q["calibration_error"] < 1.0
            assert (await http.get(stack.url("feedback", f"/v1/quality/{model}/2"))).status_code == 404
            async with channel(stack.grpc("feedback")) as ch:
                stub = feedback_pb2_grpc.FeedbackServiceStub(ch)
                got = await stub.GetQuality(feedback_pb2.QualityRequest(model=model, version="1"))
                assert got.outcomes == N and got.accuracy == pytest.approx(q["accuracy"])
                assert got.calibration_error == pytest.approx(q["calibration_error"])
                assert got.mean_value == pytest.approx(2.0) and got.log_loss == pytest.approx(q["log_loss"])
                for request, code in ((feedback_pb2.QualityRequest(model=model, version="2"), "NOT_FOUND"),
                                      (feedback_pb2.QualityRequest(version="1"), "INVALID_ARGUMENT")):
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await stub.GetQuality(request)
                    assert err.value.code().name == code
    finally:
        await producer.stop()


async def test_feedback_without_prediction_is_dead_lettered_after_its_ttl(stack: Stack) -> None:
    orphan = f"orphan-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(stack.url("feedback", "/v1/feedback"), json={"prediction_id": orphan, "label": 0})
        assert r.status_code == 202
    redis = Redis.from_url(stack.redis_url)
    try:
        for _ in range(100):
            if await redis.zscore("mlops:feedback:pending", orphan) is not None:
                break
            await asyncio.sleep(0.2)
        # The TTL is a day by default: move this one's deadline into the past instead of waiting.
        assert await redis.zadd("mlops:feedback:pending", {orphan: 0}, xx=True, ch=True) == 1
    finally:
        await redis.aclose()

    def found(recs: list) -> bool:
        return any(x.key == orphan.encode() for x in recs)

    dead = [x for x in await read_until(stack.kafka, topics.EVENTS_DEADLETTER, found, 60) if x.key == orphan.encode()]
    assert len(dead) == 1
    assert header(dead[0], "mlops-dlq-reason") == "unmatched feedback after TTL"
    assert header(dead[0], "mlops-dlq-source-topic") == "feedback.raw"
    assert header(dead[0], "event_id") == f"feedback:{orphan}"
    assert events_pb2.Feedback.FromString(dead[0].value).prediction_id == orphan
