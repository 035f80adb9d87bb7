"""Pure join logic: validating feedback, turning a (prediction, feedback) pair into a reward, a label and
the quality figures it contributes. No I/O here, so all of it is unit-tested directly."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlops.errors import InvalidArgument
from mlops.v1 import events_pb2, feedback_pb2

#: Probabilities are clipped to [EPS, 1 - EPS] before the log, as sklearn's log_loss does.
EPS = 1e-15
#: Equal-width confidence bins of the expected calibration error.
CALIBRATION_BINS = 10
MAX_ID_LEN = 256


def feedback_event_id(prediction_id: str) -> str:
    """One outcome per prediction: every feedback record for a prediction shares this event_id."""
    return f"feedback:{prediction_id}"


def reward_event_id(prediction_id: str) -> str:
    return f"reward:{prediction_id}"


def label_event_id(prediction_id: str) -> str:
    return f"label:{prediction_id}"


def validate_feedback(fb: events_pb2.Feedback, prefix: str = "") -> None:
    """Raise :class:`InvalidArgument` naming the offending field (``prefix`` locates it in a batch)."""
    if not fb.prediction_id:
        raise InvalidArgument("prediction_id is required", field=f"{prefix}prediction_id")
    if len(fb.prediction_id) > MAX_ID_LEN:
        raise InvalidArgument(f"prediction_id is longer than {MAX_ID_LEN}", field=f"{prefix}prediction_id")
    present = [name for name in ("label", "reward", "value") if fb.HasField(name)]
    if not present:
        raise InvalidArgument("one of label, reward or value is required", field=f"{prefix}label|reward|value")
    for name in present:
        if not math.isfinite(getattr(fb, name)):
            raise InvalidArgument(f"{name} must be a finite number", field=f"{prefix}{name}")
    if fb.HasField("label") and (fb.label < 0 or fb.label != int(fb.label)):
        raise InvalidArgument("label must be a class id (an integer >= 0)", field=f"{prefix}label")


def argmax(outputs: list[float]) -> int | None:
    if not outputs:
        return None
    return max(range(len(outputs)), key=outputs.__getitem__)


def class_probability(outputs: list[float], label: int) -> float | None:
    """P(label) under ``outputs``: class probabilities, or one positive-class score for a binary model."""
    if len(outputs) == 1 and label in (0, 1):
        return outputs[0] if label == 1 else 1.0 - outputs[0]
    if 0 <= label < len(outputs):
        return outputs[label]
    return None


def is_correct(outputs: list[float], label: int) -> bool:
    if len(outputs) == 1:
        return (outputs[0] >= 0.5) == (label == 1)
    return argmax(outputs) == label


def confidence(outputs: list[float]) -> float | None:
    """The probability the model gave its predicted class (max(p, 1 - p) for one binary score)."""
    if not outputs:
        return None
    c = max(outputs[0], 1.0 - outputs[0]) if len(outputs) == 1 else max(outputs)
    return min(max(c, 0.0), 1.0) if math.isfinite(c) else None


def calibration_bin(conf: float) -> int:
    return min(int(conf * CALIBRATION_BINS), CALIBRATION_BINS - 1)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one joined feedback contributes: the reward for the router and the quality figures."""

    reward: float
    label: int | None = None
    correct: bool | None = None
    log_loss: float | None = None
    value: float | None = None
    confidence: float | None = None  # of the predicted class, when labelled: for the calibration error


def outcome(prediction: events_pb2.Prediction, fb: events_pb2.Feedback) -> Outcome:
    """reward = reward if set, else value if set, else 1.0 if the label is the predicted class else 0.0."""
    outputs = list(prediction.outputs)
    label = int(fb.label) if fb.HasField("label") else None
    correct = is_correct(outputs, label) if label is not None and outputs else None
    loss = None
    if label is not None:
        p = class_probability(outputs, label)
        if p is not None and math.isfinite(p):
            loss = -math.log(min(max(p, EPS), 1.0 - EPS))
    value = fb.value if fb.HasField("value") else None
    if fb.HasField("reward"):
        reward = fb.reward
    elif value is not None:
        reward = value
    else:
        reward = 1.0 if correct else 0.0
    conf = confidence(outputs) if correct is not None else None
    return Outcome(reward=reward, label=label, correct=correct, log_loss=loss, value=value, confidence=conf)


def build_reward(prediction: events_pb2.Prediction, fb: events_pb2.Feedback, result: Outcome) -> events_pb2.Reward:
    """The router's record; its time is the feedback's, so a re-emitted reward is byte-identical."""
    reward = events_pb2.Reward(
        prediction_id=prediction.prediction_id,
        endpoint=prediction.endpoint,
        variant=prediction.variant,
        model=prediction.model,
        version=prediction.version,
        reward=result.reward,
    )
    reward.time.CopyFrom(fb.time)
    return reward


def build_label(prediction: events_pb2.Prediction, fb: events_pb2.Feedback) -> events_pb2.Label:
    label = events_pb2.Label(
        prediction_id=prediction.prediction_id,
        model=prediction.model,
        version=prediction.version,
        features=dict(prediction.features),
        label=fb.label,
        outputs=list(prediction.outputs),
    )
    label.time.CopyFrom(fb.time)
    return label


@dataclass(frozen=True, slots=True)
class Quality:
    """Online quality of one model version, from the running sums kept in Redis."""

    model: str
    version: str
    count: int
    labeled: int
    correct: int
    reward_sum: float
    value_count: int
    value_sum: float
    log_loss_count: int
    log_loss_sum: float
    #: per confidence bin: (outcomes, sum of confidence, correct ones)
    calibration: tuple[tuple[int, float, int], ...] = ()

    @classmethod
    def from_hash(cls, model: str, version: str, raw: dict[bytes, bytes] | dict[str, str]) -> Quality:
        h = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}

        def num(name: str) -> float:
            return float(h.get(name, 0) or 0)

        return cls(
            model=model,
            version=version,
            count=int(num("count")),
            labeled=int(num("labeled")),
            correct=int(num("correct")),
            reward_sum=num("reward_sum"),
            value_count=int(num("value_count")),
            value_sum=num("value_sum"),
            log_loss_count=int(num("log_loss_count")),
            log_loss_sum=num("log_loss_sum"),
            calibration=tuple(
                (int(num(f"cal_n:{b}")), num(f"cal_conf:{b}"), int(num(f"cal_ok:{b}")))
                for b in range(CALIBRATION_BINS)
            ),
        )

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labeled if self.labeled else None

    @property
    def reward_mean(self) -> float | None:
        return self.reward_sum / self.count if self.count else None

    @property
    def value_mean(self) -> float | None:
        return self.value_sum / self.value_count if self.value_count else None

    @property
    def log_loss(self) -> float | None:
        return self.log_loss_sum / self.log_loss_count if self.log_loss_count else None

    @property
    def calibration_error(self) -> float | None:
        """Expected calibration error: sum over confidence bins of (share of outcomes) x |accuracy - confidence|."""
        total = sum(n for n, _, _ in self.calibration)
        if not total:
            return None
        return sum(abs(ok - conf) for n, conf, ok in self.calibration if n) / total

    def to_proto(self) -> feedback_pb2.Quality:
        """Figures without data (no labels, no values) are NaN."""

        def f(x: float | None) -> float:
            return math.nan if x is None else x

        return feedback_pb2.Quality(
            model=self.model, version=self.version, outcomes=self.count, accuracy=f(self.accuracy),
            log_loss=f(self.log_loss), calibration_error=f(self.calibration_error), mean_reward=f(self.reward_mean),
            mean_value=f(self.value_mean),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "version": self.version,
            "count": self.count,
            "labeled": self.labeled,
            "accuracy": self.accuracy,
            "reward_mean": self.reward_mean,
            "value_count": self.value_count,
            "value_mean": self.value_mean,
            "log_loss": self.log_loss,
            "calibration_error": self.calibration_error,
        }
