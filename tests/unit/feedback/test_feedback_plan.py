"""Batch planning of the join (pure): what each record of a batch does given what Redis held, and what the
batch writes and sends."""

from __future__ import annotations

import pytest

from mlops.v1 import events_pb2
from services.feedback.join import build_label, build_reward, outcome
from services.feedback.plan import (
    FeedbackItem,
    Join,
    PredictionItem,
    QualityDelta,
    Seen,
    plan_feedback,
    plan_predictions,
    source_of,
)


def _pred(pid: str, p: float = 0.7, model: str = "m", version: str = "1") -> bytes:
    return events_pb2.Prediction(prediction_id=pid, model=model, version=version, endpoint="ep", variant="a",
                                 outputs=[1 - p, p], features={"x": p}).SerializeToString()


def _fb(pid: str, **kw: float) -> bytes:
    fb = events_pb2.Feedback(prediction_id=pid, **kw)
    fb.time.FromSeconds(1_700_000_000)
    return fb.SerializeToString()


def _item(pid: str, offset: int, **kw: float) -> FeedbackItem:
    return FeedbackItem(pid, _fb(pid, **kw), source_of("feedback.raw", 0, offset), 0, offset)


def test_feedback_joins_a_stored_prediction_and_holds_the_others() -> None:
    items = [_item("a", 1, label=1), _item("b", 2, reward=0.5)]
    plan = plan_feedback(items, {"a": Seen(prediction=_pred("a")), "b": Seen()})
    assert plan.joins == [Join("a", "", items[0].raw, "feedback.raw/0/1", False)]
    assert plan.holds == [items[1]]
    assert [e for _, _, e in plan.rewards] == ["reward:a"]
    assert [(k, e) for k, _, e in plan.labels] == [("m", "label:a")], "labels are keyed by model"
    assert plan.quality[("m", "1")].ints == {"count": 1, "labeled": 1, "correct": 1, "log_loss_count": 1,
                                             "cal_n:7": 1, "cal_ok:7": 1}


def test_records_match_the_single_join_rules_byte_for_byte() -> None:
    pred, fb = _pred("a"), _fb("a", label=0)
    plan = plan_feedback([FeedbackItem("a", fb, "s", 0, 0)], {"a": Seen(prediction=pred)})
    p, f = events_pb2.Prediction.FromString(pred), events_pb2.Feedback.FromString(fb)
    result = outcome(p, f)
    assert plan.rewards[0][1].SerializeToString() == build_reward(p, f, result).SerializeToString()
    assert plan.labels[0][1].SerializeToString() == build_label(p, f).SerializeToString()


def test_second_outcome_for_a_prediction_is_a_duplicate_in_the_batch_or_after_it() -> None:
    plan = plan_feedback([_item("a", 1, label=1), _item("a", 2, label=0)], {"a": Seen(prediction=_pred("a"))})
    assert len(plan.joins) == 1 and plan.joins[0].by.endswith("/1") and plan.duplicates == 1
    assert len(plan.rewards) == 1
    for seen in (Seen(state="joined", by="feedback.raw/0/1", prediction=_pred("a")), Seen(state="expired"),
                 Seen(held=True)):
        plan = plan_feedback([_item("a", 9, label=1)], {"a": seen})
        assert (plan.duplicates, plan.joins, plan.holds, plan.rewards) == (1, [], [], [])


def test_redelivered_record_re_emits_its_join_without_counting_it_again() -> None:
    item = _item("a", 5, reward=0.25)
    plan = plan_feedback([item], {"a": Seen(state="joined", by=item.source, prediction=_pred("a"))})
    assert plan.joins == [] and plan.quality == {} and plan.reemitted == 1
    assert [e for _, _, e in plan.rewards] == ["reward:a"] and plan.rewards[0][1].reward == 0.25
    assert not plan.writes
    gone = plan_feedback([item], {"a": Seen(state="joined", by=item.source)})  # prediction expired meanwhile
    assert gone.unrecoverable == ["a"] and gone.rewards == []


def test_a_legacy_claim_is_taken_over_with_its_claimed_feedback() -> None:
    claimed = _fb("a", label=0)
    plan = plan_feedback([_item("a", 3, label=1)],
                         {"a": Seen(state="claimed", join_feedback=claimed, prediction=_pred("a"))})
    assert plan.joins == [Join("a", "claimed", claimed, "feedback.raw/0/3", False)]
    assert plan.labels[0][1].label == 0


def test_prediction_joins_the_feedback_held_for_it() -> None:
    held = _fb("a", value=3.0)
    items = [PredictionItem("a", _pred("a"), "predictions/1/7"), PredictionItem("b", _pred("b"), "predictions/1/8")]
    plan = plan_predictions(items, {"a": Seen(held_feedback=held, held=True), "b": Seen()})
    assert plan.joins == [Join("a", "", held, "predictions/1/7", True)]
    assert plan.rewards[0][1].reward == 3.0 and plan.labels == []
    assert plan.quality[("m", "1")].floats == {"reward_sum": 3.0, "value_sum": 3.0}


def test_prediction_redelivered_re_emits_only_its_own_join() -> None:
    fb = _fb("a", label=1)
    item = PredictionItem("a", _pred("a"), "predictions/1/7")
    mine = plan_predictions([item], {"a": Seen(state="joined", by="predictions/1/7", join_feedback=fb)})
    assert mine.reemitted == 1 and mine.joins == [] and [e for _, _, e in mine.rewards] == ["reward:a"]
    other = plan_predictions([item], {"a": Seen(state="joined", by="feedback.raw/0/1", join_feedback=fb)})
    assert other.rewards == [] and not other.writes


def test_quality_delta_sums_a_batch() -> None:
    delta = QualityDelta()
    p = events_pb2.Prediction.FromString(_pred("a", 0.9))
    for label in (1, 1, 0):
        f = events_pb2.Feedback.FromString(_fb("a", label=label))
        delta.add(outcome(p, f))
    assert delta.ints["count"] == 3 and delta.ints["labeled"] == 3 and delta.ints["correct"] == 2
    assert delta.ints["cal_n:9"] == 3 and delta.floats["cal_conf:9"] == pytest.approx(2.7)
    assert delta.floats["reward_sum"] == 2.0
