"""The join's Redis scripts against the stack's redis-server: a batch read, planned and written in one script
each; a write whose reads changed meanwhile writes nothing; a redelivered record re-emits without counting
twice; a claim left by the per-record join of an earlier version is taken over once."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from mlops.v1 import events_pb2
from services.feedback.plan import FeedbackItem, PredictionItem, plan_feedback, plan_predictions, source_of
from services.feedback.store import PREFIX, JoinStore
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def _pred(pid: str, model: str) -> bytes:
    return events_pb2.Prediction(prediction_id=pid, model=model, version="1", outputs=[0.2, 0.8]).SerializeToString()


def _fb(pid: str, label: int) -> bytes:
    return events_pb2.Feedback(prediction_id=pid, label=label).SerializeToString()


def _store(redis: Redis) -> JoinStore:
    return JoinStore(redis, prediction_ttl_s=600, feedback_ttl_s=600, dedup_ttl_s=600, claim_lease_s=5)


async def test_batches_join_in_either_order_and_redeliveries_count_once(stack: Stack) -> None:
    redis = Redis.from_url(stack.redis_url)
    store, run = _store(redis), uuid.uuid4().hex[:8]
    model = f"st{run}"
    early, late = [f"{run}-e{i}" for i in range(50)], [f"{run}-l{i}" for i in range(50)]
    try:
        fbs = [FeedbackItem(pid, _fb(pid, 1), source_of("feedback.raw", 0, i), 0, i) for i, pid in enumerate(early)]
        plan = plan_feedback(fbs, await store.read_for_feedback(fbs))
        assert len(plan.holds) == 50 and await store.apply(plan, 1000.0) == []
        assert await redis.zscore(f"{PREFIX}pending", early[0]) == 1600.0  # held until now + feedback TTL

        preds = [PredictionItem(pid, _pred(pid, model), source_of("predictions", 1, i))
                 for i, pid in enumerate(early + late)]
        plan = plan_predictions(preds, await store.store_predictions(preds))
        assert [j.prediction_id for j in plan.joins] == early and len(plan.rewards) == len(plan.labels) == 50
        quality = await store.apply(plan, 1001.0)
        assert quality is not None and quality[0].count == 50 and quality[0].correct == 50
        assert await redis.zscore(f"{PREFIX}pending", early[0]) is None

        late_fbs = [FeedbackItem(pid, _fb(pid, 0), source_of("feedback.raw", 0, 100 + i), 0, 100 + i)
                    for i, pid in enumerate(late)]
        plan = plan_feedback(late_fbs + fbs[:5], await store.read_for_feedback(late_fbs + fbs[:5]))
        assert len(plan.joins) == 50 and plan.duplicates == 5
        assert (await store.apply(plan, 1002.0))[0].count == 100  # type: ignore[index]

        # Delivered again (as after a kill -9 before the offsets were committed): the same records go out
        # again from the records that made the joins, nothing is counted twice.
        again = plan_predictions(preds, await store.store_predictions(preds))
        assert again.reemitted == 50 and not again.writes
        again_fb = plan_feedback(late_fbs, await store.read_for_feedback(late_fbs))
        assert again_fb.reemitted == 50 and not again_fb.writes
        assert [r.SerializeToString() for _, r, _ in again_fb.rewards] == [
            r.SerializeToString() for _, r, _ in plan.rewards[:50]]
        assert (await store.quality(model, "1")).count == 100  # type: ignore[union-attr]
    finally:
        await redis.aclose()


async def test_a_write_whose_reads_changed_writes_nothing(stack: Stack) -> None:
    redis = Redis.from_url(stack.redis_url)
    store, run = _store(redis), uuid.uuid4().hex[:8]
    pids = [f"{run}-{i}" for i in range(3)]
    try:
        fbs = [FeedbackItem(pid, _fb(pid, 1), source_of("feedback.raw", 2, i), 2, i) for i, pid in enumerate(pids)]
        stale = plan_feedback(fbs, await store.read_for_feedback(fbs))  # all three held
        preds = [PredictionItem(pids[2], _pred(pids[2], f"cf{run}"), "predictions/0/1")]
        assert not plan_predictions(preds, await store.store_predictions(preds)).writes
        assert await store.apply(stale, 1000.0) is None  # the third one's prediction came meanwhile
        assert await redis.exists(*(f"{PREFIX}held:{pid}" for pid in pids)) == 0
        fresh = plan_feedback(fbs, await store.read_for_feedback(fbs))
        assert len(fresh.holds) == 2 and [j.prediction_id for j in fresh.joins] == [pids[2]]
        assert await store.apply(fresh, 1000.0) is not None
    finally:
        await redis.aclose()


async def test_a_claim_left_by_the_per_record_join_is_taken_over_once(stack: Stack) -> None:
    redis = Redis.from_url(stack.redis_url)
    store, run = _store(redis), uuid.uuid4().hex[:8]
    pid, model = f"{run}-legacy", f"lg{run}"
    try:
        await redis.set(f"{PREFIX}pred:{pid}", _pred(pid, model))
        await redis.hset(f"{PREFIX}join:{pid}", mapping={"state": "claimed", "pred": _pred(pid, model),
                                                         "fb": _fb(pid, 0), "claimed_at": "1"})
        item = [FeedbackItem(pid, _fb(pid, 1), "feedback.raw/0/9", 0, 9)]
        plan = plan_feedback(item, await store.read_for_feedback(item))
        assert plan.joins and plan.labels[0][1].label == 0  # the claimed outcome, not the new one
        assert (await store.apply(plan, 5.0))[0].count == 1  # type: ignore[index]
        assert plan_feedback(item, await store.read_for_feedback(item)).reemitted == 1
        other = [FeedbackItem(pid, _fb(pid, 1), "feedback.raw/0/10", 0, 10)]
        assert plan_feedback(other, await store.read_for_feedback(other)).duplicates == 1
    finally:
        await redis.aclose()
