"""Pure join logic: validation, the reward rule, quality figures and the records built from a join."""

from __future__ import annotations

import math

import pytest

from mlops.errors import InvalidArgument
from mlops.v1 import events_pb2
from services.feedback.join import (
    Quality,
    build_label,
    build_reward,
    feedback_event_id,
    label_event_id,
    outcome,
    reward_event_id,
    validate_feedback,
)


def _pred(outputs: list[float], **kw: object) -> events_pb2.Prediction:
    return events_pb2.Prediction(
        prediction_id="p1", endpoint="ep", variant="a", model="m", version="2", outputs=outputs,
        features={"x": 1.5}, **kw,  # type: ignore[arg-type]
    )


def _fb(**kw: float) -> events_pb2.Feedback:
    fb = events_pb2.Feedback(prediction_id="p1", **kw)
    fb.time.FromSeconds(1_700_000_000)
    return fb


def test_event_ids_are_deterministic_per_prediction() -> None:
    assert feedback_event_id("p1") == "feedback:p1"
    assert reward_event_id("p1") == "reward:p1"
    assert label_event_id("p1") == "label:p1"


@pytest.mark.parametrize(
    ("fb", "prefix", "field"),
    [
        (events_pb2.Feedback(label=1), "", "prediction_id"),
        (events_pb2.Feedback(prediction_id="x" * 300, label=1), "", "prediction_id"),
        (events_pb2.Feedback(prediction_id="p"), "3.", "3.label|reward|value"),
        (events_pb2.Feedback(prediction_id="p", reward=math.inf), "", "reward"),
        (events_pb2.Feedback(prediction_id="p", value=math.nan), "items.0.", "items.0.value"),
        (events_pb2.Feedback(prediction_id="p", label=-1), "", "label"),
        (events_pb2.Feedback(prediction_id="p", label=0.5), "", "label"),
    ],
)
def test_validation_names_the_field(fb: events_pb2.Feedback, prefix: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_feedback(fb, prefix)
    assert err.value.field == field


def test_valid_feedback_passes() -> None:
    validate_feedback(events_pb2.Feedback(prediction_id="p", label=0))
    validate_feedback(events_pb2.Feedback(prediction_id="p", reward=-2.0))
    validate_feedback(events_pb2.Feedback(prediction_id="p", value=0.0))


def test_reward_prefers_reward_then_value_then_label() -> None:
    pred = _pred([0.2, 0.8])
    assert outcome(pred, _fb(reward=0.3, value=9.0, label=0)).reward == 0.3
    assert outcome(pred, _fb(value=9.0, label=0)).reward == 9.0
    assert outcome(pred, _fb(label=1)).reward == 1.0
    assert outcome(pred, _fb(label=0)).reward == 0.0


def test_label_outcome_has_accuracy_and_log_loss() -> None:
    result = outcome(_pred([0.1, 0.7, 0.2]), _fb(label=1))
    assert result.correct is True
    assert result.log_loss == pytest.approx(-math.log(0.7))
    wrong = outcome(_pred([0.1, 0.7, 0.2]), _fb(label=2))
    assert wrong.correct is False and wrong.log_loss == pytest.approx(-math.log(0.2))


def test_single_score_is_binary_positive_class() -> None:
    assert outcome(_pred([0.9]), _fb(label=1)).correct is True
    assert outcome(_pred([0.9]), _fb(label=0)).log_loss == pytest.approx(-math.log(0.1))


def test_log_loss_is_clipped_and_out_of_range_labels_are_wrong() -> None:
    assert math.isfinite(outcome(_pred([1.0, 0.0]), _fb(label=1)).log_loss or 0.0)
    far = outcome(_pred([0.5, 0.5]), _fb(label=7))
    assert far.correct is False and far.log_loss is None


def test_no_label_means_no_accuracy() -> None:
    result = outcome(_pred([0.5, 0.5]), _fb(value=2.5))
    assert result.correct is None and result.log_loss is None and result.value == 2.5


def test_reward_and_label_records_copy_the_prediction() -> None:
    pred, fb = _pred([0.2, 0.8]), _fb(label=1)
    reward = build_reward(pred, fb, outcome(pred, fb))
    assert (reward.endpoint, reward.variant, reward.model, reward.version, reward.reward) == ("ep", "a", "m", "2", 1.0)
    assert reward.time.seconds == 1_700_000_000
    # Rebuilt from the same inputs (a re-emit after a crash): the same bytes.
    assert build_reward(pred, fb, outcome(pred, fb)).SerializeToString() == reward.SerializeToString()
    label = build_label(pred, fb)
    assert label.label == 1 and list(label.outputs) == [0.2, 0.8] and dict(label.features) == {"x": 1.5}


def test_quality_from_redis_hash() -> None:
    q = Quality.from_hash(
        "m",
        "1",
        {
            b"count": b"4",
            b"labeled": b"2",
            b"correct": b"1",
            b"reward_sum": b"3",
            b"value_count": b"1",
            b"value_sum": b"10.5",
            b"log_loss_count": b"2",
            b"log_loss_sum": b"1",
        },
    )
    assert (q.accuracy, q.reward_mean, q.value_mean, q.log_loss) == (0.5, 0.75, 10.5, 0.5)
    empty = Quality.from_hash("m", "1", {})
    assert empty.to_dict()["accuracy"] is None and empty.reward_mean is None


def test_labelled_outcomes_carry_the_confidence_of_the_predicted_class() -> None:
    assert outcome(_pred([0.2, 0.8]), _fb(label=0)).confidence == pytest.approx(0.8)
    assert outcome(_pred([0.3]), _fb(label=0)).confidence == pytest.approx(0.7)
    assert outcome(_pred([0.2, 0.8]), _fb(value=1.0)).confidence is None


def test_calibration_error_is_the_expected_calibration_error() -> None:
    # Bin 8 ([0.8, 0.9)): 10 outcomes at confidence 0.85, 6 right -> |0.6 - 0.85| weighted by 10/20;
    # bin 5: 10 outcomes at 0.55, 5 right -> |0.5 - 0.55| weighted by 10/20.
    h = {"count": "20", "labeled": "20", "correct": "11", "cal_n:8": "10", "cal_conf:8": "8.5", "cal_ok:8": "6",
         "cal_n:5": "10", "cal_conf:5": "5.5", "cal_ok:5": "5"}
    q = Quality.from_hash("m", "1", h)
    assert q.calibration_error == pytest.approx(0.5 * 0.25 + 0.5 * 0.05)
    assert q.to_dict()["calibration_error"] == pytest.approx(0.15)
    proto = q.to_proto()
    assert proto.outcomes == 20 and proto.accuracy == pytest.approx(0.55)
    assert proto.calibration_error == pytest.approx(0.15) and math.isnan(proto.mean_value)
    assert Quality.from_hash("m", "1", {}).calibration_error is None
