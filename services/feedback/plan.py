"""Pure batch planning of the join: given a batch of records and what Redis held for their prediction ids
when the batch began, decide what each record does, and build everything the batch writes and emits.

A batch is handled in three steps (``core.FeedbackCore``): read what Redis holds for the batch's ids
(one round trip), plan here (no I/O), then apply the plan in one Lua script that first checks that
nothing it read has changed (else the batch is read and planned again) and then writes every join,
hold and quality sum at once; last, the batch's rewards and labels are sent together.

Exactly once without a claim step: a join is written together with its quality sums and the identity
(``topic/partition/offset``) of the record that made it. Offsets are committed only after the batch's
records were sent, so if the process dies between the write and the acknowledgement, the same record
is delivered again, finds the join marked as its own, and sends the same records again (byte for byte,
with the same event_ids, which consumers drop), while the quality sums are not added twice. Any other
record for that prediction is a duplicate and emits nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mlops.v1 import events_pb2
from services.feedback.join import (
    Outcome,
    build_label,
    build_reward,
    calibration_bin,
    label_event_id,
    outcome,
    reward_event_id,
)

#: join states, in ``join:{id}``: ``joined`` (this design), ``claimed`` (left by a version before it, a
#: join claimed but maybe never emitted: taken over once), ``expiring``/``expired`` (the sweep's)
JOINED = "joined"
LEGACY_CLAIMED = "claimed"


def source_of(topic: str, partition: int, offset: int) -> str:
    """A record's identity, which a join keeps so that only a redelivery of that record re-emits it."""
    return f"{topic}/{partition}/{offset}"


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """One valid ``feedback.raw`` record."""

    prediction_id: str
    raw: bytes
    source: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class PredictionItem:
    """One non-shadow ``predictions`` record."""

    prediction_id: str
    raw: bytes
    source: str


@dataclass(frozen=True, slots=True)
class Seen:
    """What Redis held for one prediction id when the batch was read."""

    state: str = ""  # the join's state, "" for none
    by: str = ""  # the record that made the join
    join_feedback: bytes | None = None  # the joined (or, legacy, claimed) feedback
    prediction: bytes | None = None  # the served prediction (feedback path)
    held_feedback: bytes | None = None  # feedback waiting for its prediction (prediction path)
    held: bool = False


@dataclass(frozen=True, slots=True)
class Join:
    """A new join to write: the script checks ``expected_state`` (and, from the prediction path, that the
    held feedback is still ``feedback``; from the feedback path, that the prediction is still there)."""

    prediction_id: str
    expected_state: str
    feedback: bytes
    by: str
    from_prediction: bool


@dataclass
class QualityDelta:
    """What a batch adds to one version's quality sums (field names as ``join.Quality.from_hash`` reads)."""

    ints: dict[str, int] = field(default_factory=dict)
    floats: dict[str, float] = field(default_factory=dict)

    def _int(self, name: str, n: int) -> None:
        self.ints[name] = self.ints.get(name, 0) + n

    def _float(self, name: str, x: float) -> None:
        self.floats[name] = self.floats.get(name, 0.0) + x

    def add(self, result: Outcome) -> None:
        self._int("count", 1)
        self._float("reward_sum", result.reward)
        if result.correct is not None:
            self._int("labeled", 1)
            self._int("correct", int(result.correct))
        if result.value is not None:
            self._int("value_count", 1)
            self._float("value_sum", result.value)
        if result.log_loss is not None:
            self._int("log_loss_count", 1)
            self._float("log_loss_sum", result.log_loss)
        if result.confidence is not None and result.correct is not None:
            b = calibration_bin(result.confidence)
            self._int(f"cal_n:{b}", 1)
            self._float(f"cal_conf:{b}", result.confidence)
            self._int(f"cal_ok:{b}", int(result.correct))


Keyed = tuple[str, events_pb2.Reward | events_pb2.Label, str]


@dataclass
class Plan:
    """A batch's decisions: what to write (joins, holds, counts, quality) and what to send."""

    joins: list[Join] = field(default_factory=list)
    holds: list[FeedbackItem] = field(default_factory=list)
    duplicates: int = 0
    reemitted: int = 0
    #: records whose prediction expired before a redelivery could re-emit their join
    unrecoverable: list[str] = field(default_factory=list)
    quality: dict[tuple[str, str], QualityDelta] = field(default_factory=dict)
    rewards: list[Keyed] = field(default_factory=list)
    labels: list[Keyed] = field(default_factory=list)

    def _emit(self, raw_prediction: bytes, raw_feedback: bytes, count: bool) -> None:
        prediction = events_pb2.Prediction.FromString(raw_prediction)
        fb = events_pb2.Feedback.FromString(raw_feedback)
        result = outcome(prediction, fb)
        pid = prediction.prediction_id
        self.rewards.append((pid, build_reward(prediction, fb, result), reward_event_id(pid)))
        if fb.HasField("label"):
            # Keyed by model: a version's labels are one ordered stream in one partition, which the drift
            # service's sequential detectors need.
            self.labels.append((prediction.model, build_label(prediction, fb), label_event_id(pid)))
        if count:
            self.quality.setdefault((prediction.model, prediction.version), QualityDelta()).add(result)

    def join(self, join: Join, raw_prediction: bytes) -> None:
        self.joins.append(join)
        self._emit(raw_prediction, join.feedback, count=True)

    def reemit(self, raw_prediction: bytes, raw_feedback: bytes) -> None:
        self.reemitted += 1
        self._emit(raw_prediction, raw_feedback, count=False)

    @property
    def writes(self) -> bool:
        return bool(self.joins or self.holds or self.duplicates)


def plan_feedback(items: Iterable[FeedbackItem], seen: dict[str, Seen]) -> Plan:
    """Decide each feedback record: join it to its stored prediction, hold it until the prediction comes,
    re-emit a join it made before a crash, or drop it as a duplicate (one outcome per prediction)."""
    plan = Plan()
    decided: set[str] = set()
    for item in items:
        pid = item.prediction_id
        if pid in decided:  # a second outcome for this prediction in the same batch
            plan.duplicates += 1
            continue
        decided.add(pid)
        s = seen.get(pid, Seen())
        if s.state == JOINED and s.by == item.source:
            if s.prediction is None:
                plan.unrecoverable.append(pid)
            else:
                plan.reemit(s.prediction, item.raw)
        elif s.state == LEGACY_CLAIMED and s.prediction is not None and s.join_feedback is not None:
            plan.join(Join(pid, LEGACY_CLAIMED, s.join_feedback, item.source, False), s.prediction)
        elif s.state or s.held:
            plan.duplicates += 1
        elif s.prediction is not None:
            plan.join(Join(pid, "", item.raw, item.source, False), s.prediction)
        else:
            plan.holds.append(item)
    return plan


def plan_predictions(items: Iterable[PredictionItem], seen: dict[str, Seen]) -> Plan:
    """Decide each (already stored) prediction: join the feedback held for it, or re-emit a join this
    record made before a crash; anything else waits for its feedback."""
    plan = Plan()
    decided: set[str] = set()
    for item in items:
        pid = item.prediction_id
        if pid in decided:
            continue
        decided.add(pid)
        s = seen.get(pid, Seen())
        if s.state == JOINED and s.by == item.source and s.join_feedback is not None:
            plan.reemit(item.raw, s.join_feedback)
        elif s.state == LEGACY_CLAIMED and s.join_feedback is not None:
            plan.join(Join(pid, LEGACY_CLAIMED, s.join_feedback, item.source, True), item.raw)
        elif not s.state and s.held_feedback is not None:
            plan.join(Join(pid, "", s.held_feedback, item.source, True), item.raw)
    return plan
