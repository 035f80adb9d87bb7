"""The retraining loop's first step: turn drift alerts, quality drops, the schedule and the volume of new
labels into ``TrainingRequest`` records on ``training.requests``, once per cooldown per model, each
recorded with its reason.

Drift alerts arrive through the ``drift.alerts`` topic (so an alert raised by any replica is seen once
per consumer group, and a crash redelivers it); the other triggers are checked by :meth:`Retrainer.tick`
on every replica. Requests are decided in Redis (:class:`RetrainStore`): one script checks the model's
cooldown, claims the request under a deterministic id and records it, so two replicas (or a redelivered
alert) never ask twice. The request is then produced ("claim, publish, mark sent"); a claim left unsent
by a crash is published again by the next tick, with the same id, and the trainer drops the repeat.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from mlops.bus import topics
from mlops.bus.producer import Producer
from mlops.v1 import events_pb2
from services.drift import metrics
from services.drift.policy import (
    DriftTrigger,
    NewLabelsTrigger,
    Policy,
    QualityTrigger,
    RetrainingPolicy,
    ScheduleTrigger,
)
from services.drift.store import PREFIX, retrain_model_key

log = logging.getLogger(__name__)

_R = f"{PREFIX}retrain:"

# KEYS: model hash, request hash, requests list. ARGV: id, request bytes, record JSON, now, cooldown, ttl, max.
_CLAIM = """
local st = redis.call('HGET', KEYS[2], 'state')
if st then return {'exists', st, redis.call('HGET', KEYS[2], 'claimed_at')} end
local last = redis.call('HGET', KEYS[1], 'last_at')
if last and tonumber(ARGV[4]) - tonumber(last) < tonumber(ARGV[5]) then
  redis.call('HINCRBY', KEYS[1], 'suppressed', 1)
  return {'cooldown', last}
end
redis.call('HSET', KEYS[1], 'last_at', ARGV[4], 'labels_since', 0, 'last_request', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[2], 'state', 'claimed', 'pb', ARGV[2], 'record', ARGV[3], 'claimed_at', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
return {'claimed'}
"""

#: stage of a model version, or None when the registry does not know it
StageLookup = Callable[[str, str], Awaitable[str | None]]
#: (labelled outcomes, accuracy or None, log loss or None) of a version, from the feedback service
FeedbackQuality = Callable[[str, str], Awaitable[tuple[int, float | None, float | None] | None]]
#: the last n (correct, loss) outcomes of a version, oldest first
RecentOutcomes = Callable[[str, str, int], Awaitable[list[tuple[float, float]]]]
#: the model versions seen
Versions = Callable[[], Awaitable[list[tuple[str, str]]]]


class RetrainStore:
    """The retraining decisions in Redis (prefix ``mlops:drift:retrain:``)."""

    def __init__(self, redis: Redis, *, ttl_s: int, max_records: int = 500) -> None:
        self._redis = redis
        self.ttl_s = ttl_s
        self.max_records = max_records
        self._claim = redis.register_script(_CLAIM)

    async def claim(self, model: str, request_id: str, request: bytes, record: str, now: float,
                    cooldown_s: float) -> tuple[str, ...]:
        raw = await self._claim(
            keys=[retrain_model_key(model), f"{_R}request:{request_id}", f"{_R}requests"],
            args=[request_id, request, record, now, cooldown_s, self.ttl_s, self.max_records],
        )
        return tuple((x.decode() if isinstance(x, bytes) else str(x)) for x in raw if x is not None)

    async def mark_sent(self, request_id: str, now: float) -> None:
        await self._redis.hset(f"{_R}request:{request_id}", mapping={"state": "sent", "sent_at": now})  # type: ignore[misc]

    async def model_state(self, model: str) -> dict[str, str]:
        raw = await self._redis.hgetall(retrain_model_key(model))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def set_if_absent(self, model: str, field: str, value: float) -> float:
        key = retrain_model_key(model)
        await self._redis.hsetnx(key, field, repr(value))  # type: ignore[misc]
        return float(await self._redis.hget(key, field))  # type: ignore[misc,arg-type]

    async def set_field(self, model: str, field: str, value: float) -> None:
        await self._redis.hset(retrain_model_key(model), field, repr(value))  # type: ignore[misc]

    async def hold(self, model: str, pending: str) -> bool:
        """Keep a drift alert until enough labels arrive; False when one is already held."""
        return bool(await self._redis.hsetnx(retrain_model_key(model), "pending_drift", pending))  # type: ignore[misc]

    async def release(self, model: str) -> None:
        await self._redis.hdel(retrain_model_key(model), "pending_drift")  # type: ignore[misc]

    async def requests(self, limit: int) -> list[dict[str, Any]]:
        ids = [i.decode() for i in await self._redis.lrange(f"{_R}requests", 0, limit - 1)]
        pipe = self._redis.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(f"{_R}request:{i}")
        out = []
        for h in await pipe.execute():
            if not h:
                continue
            d = {k.decode(): v for k, v in h.items()}
            record = json.loads(d["record"]) if "record" in d else {}
            record["state"] = d["state"].decode()
            record["pb"] = d.get("pb")
            record["claimed_at"] = float(d.get("claimed_at") or 0)
            out.append(record)
        return out

    async def decide(self, decision: dict[str, Any]) -> None:
        await self._redis.lpush(f"{_R}decisions", json.dumps(decision, sort_keys=True))  # type: ignore[misc]
        await self._redis.ltrim(f"{_R}decisions", 0, self.max_records - 1)  # type: ignore[misc]

    async def decisions(self, limit: int) -> list[dict[str, Any]]:
        return [json.loads(d) for d in await self._redis.lrange(f"{_R}decisions", 0, limit - 1)]


@dataclass(frozen=True, slots=True)
class Decision:
    request_id: str
    model: str
    trigger: str
    outcome: str  # requested | cooldown | duplicate
    reason: str


class Retrainer:
    """Applies the policy; one per process, every replica runs :meth:`tick`."""

    def __init__(
        self,
        policy: RetrainingPolicy,
        store: RetrainStore,
        producer: Producer,
        *,
        stage_of: StageLookup,
        recent_outcomes: RecentOutcomes,
        versions: Versions,
        feedback_quality: FeedbackQuality | None = None,
        claim_lease_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.store = store
        self._producer = producer
        self._stage_of = stage_of
        self._recent_outcomes = recent_outcomes
        self._versions = versions
        self._feedback_quality = feedback_quality
        self._lease_s = claim_lease_s
        self._clock = clock

    # -- the one place requests are made -----------------------------------------------------------------
    async def request(self, model: str, policy: Policy, trigger: str, key: str, reason: str,
                      details: dict[str, Any], recent_rows: int | None = None) -> Decision:
        now = self._clock()
        request_id = f"retrain:{model}:{key}"
        spec = policy.request
        rows = spec.recent_rows if recent_rows is None else recent_rows
        msg = events_pb2.TrainingRequest(
            request_id=request_id, model=model, reason=f"{trigger}: {reason}", stage=spec.stage,
            recent_rows=rows, epochs=spec.epochs, seed=spec.seed,
        )
        msg.time.FromNanoseconds(int(now * 1e9))
        record = {"request_id": request_id, "model": model, "trigger": trigger, "reason": msg.reason,
                  "details": details, "stage": spec.stage, "recent_rows": rows, "time": now}
        claimed = await self.store.claim(model, request_id, msg.SerializeToString(), json.dumps(record, default=float),
                                         now, policy.cooldown_s)
        outcome = {"claimed": "requested", "cooldown": "cooldown"}.get(claimed[0], "duplicate")
        if claimed[0] == "claimed":
            await self._publish(request_id, msg, model)
        elif claimed[0] == "exists" and claimed[1] == "claimed" and now - float(claimed[2] or 0) > self._lease_s:
            await self._publish(request_id, msg, model)  # a claim a crash left unsent
        if outcome != "duplicate":
            metrics.TRAINING_REQUESTS.labels(model, trigger, outcome).inc()
            await self.store.decide({"time": now, "model": model, "trigger": trigger, "outcome": outcome,
                                     "reason": msg.reason, "request_id": request_id})
            log.log(logging.WARNING if outcome == "requested" else logging.INFO,
                    "retraining %s for %s: %s", outcome, model, msg.reason)
        return Decision(request_id, model, trigger, outcome, msg.reason)

    async def _publish(self, request_id: str, msg: events_pb2.TrainingRequest, model: str) -> None:
        await self._producer.send(topics.TRAINING_REQUESTS, msg, key=model, event_id=request_id)
        await self.store.mark_sent(request_id, self._clock())

    async def _counts(self, policy: Policy, model: str, version: str) -> str | None:
        """The version's stage when the policy counts signals about it, else None."""
        stage = await self._stage_of(model, version) if policy.stages else ""
        if stage is None or not policy.counts_stage(stage):
            return None
        return stage

    # -- triggers ----------------------------------------------------------------------------------------
    async def on_alert(self, alert: events_pb2.DriftAlert) -> Decision | None:
        policy = self.policy.for_model(alert.model)
        if policy is None or not any(isinstance(t, DriftTrigger) and alert.kind in t.kinds for t in policy.triggers):
            return None
        stage = await self._counts(policy, alert.model, alert.version)
        if stage is None:
            log.info("drift alert %s: version %s of %s is not in stages %s", alert.alert_id, alert.version,
                     alert.model, policy.stages)
            return None
        reason = (f"{alert.kind} drift on version {alert.version}"
                  f"{f' ({stage})' if stage else ''}: {alert.feature} {alert.score:.4g} ({alert.detector})")
        details = {"alert_id": alert.alert_id, "version": alert.version, "kind": alert.kind}
        trigger = next(t for t in policy.triggers if isinstance(t, DriftTrigger) and alert.kind in t.kinds)
        if trigger.settle_labels > 0:
            return await self._hold(alert.model, policy, trigger, reason, details)
        return await self.request(alert.model, policy, "drift", alert.alert_id.removeprefix("drift:"), reason, details)

    async def _hold(self, model: str, policy: Policy, trigger: DriftTrigger, reason: str,
                    details: dict[str, Any]) -> Decision | None:
        """Remember the alert (the first one wins) and the label count at that moment; :meth:`tick` asks once
        ``settle_labels`` more labelled outcomes have arrived."""
        state = await self.store.model_state(model)
        if state.get("last_at") and self._clock() - float(state["last_at"]) < policy.cooldown_s:
            return None
        pending = {"reason": reason, "details": details, "labels_at": int(state.get("labels_since") or 0),
                   "settle": trigger.settle_labels, "at": self._clock()}
        if not await self.store.hold(model, json.dumps(pending)):
            return None
        await self.store.decide({"time": self._clock(), "model": model, "trigger": "drift", "outcome": "held",
                                 "reason": f"drift: {reason}; waiting for {trigger.settle_labels} labelled outcomes",
                                 "request_id": ""})
        return Decision("", model, "drift", "held", reason)

    async def _release(self, model: str, policy: Policy, state: dict[str, str]) -> Decision | None:
        pending = json.loads(state["pending_drift"])
        seen = int(state.get("labels_since") or 0) - int(pending["labels_at"])
        if seen < int(pending["settle"]):
            return None
        details = {**pending["details"], "labels_after_alert": seen}
        key = str(pending["details"].get("alert_id", "")).removeprefix("drift:")
        decision = await self.request(model, policy, "drift", key, f"{pending['reason']} (after {seen} labels)",
                                      details, recent_rows=int(pending["settle"]))
        await self.store.release(model)
        return decision

    async def tick(self) -> list[Decision]:
        """Schedule, quality and new-label triggers of every known model; resend claims left unsent."""
        out: list[Decision] = []
        versions = await self._versions()
        models = sorted({m for m, _ in versions} | set(self.policy.named_models()))
        for model in models:
            policy = self.policy.for_model(model)
            if policy is None:
                continue
            state = await self.store.model_state(model)
            seq = int(state.get("seq") or 0)
            # Quality and label volume stay past their thresholds until a new version serves: asking only
            # once the cooldown is over keeps the decision log to real decisions.
            cooling = bool(state.get("last_at")) and self._clock() - float(state["last_at"]) < policy.cooldown_s
            if state.get("pending_drift") and not cooling:
                released = await self._release(model, policy, state)
                if released is not None:
                    out.append(released)
                # While a drift alert waits for post-change labels, the quality and label-volume triggers
                # (which see the same change) wait with it: one change, one request, on the right rows.
                continue
            for i, trigger in enumerate(policy.triggers):
                decision: Decision | None = None
                if isinstance(trigger, ScheduleTrigger):
                    decision = await self._schedule(model, policy, trigger, i)
                elif cooling:
                    continue
                elif isinstance(trigger, NewLabelsTrigger):
                    decision = await self._new_labels(model, policy, trigger, state, versions, seq)
                elif isinstance(trigger, QualityTrigger):
                    for m, version in versions:
                        if m == model and decision is None:
                            decision = await self._quality(model, version, policy, trigger, seq)
                if decision is not None:
                    out.append(decision)
        await self._resend()
        return out

    async def _new_labels(self, model: str, policy: Policy, trigger: NewLabelsTrigger, state: dict[str, str],
                          versions: list[tuple[str, str]], seq: int) -> Decision | None:
        """Enough labels for ``model`` since its last request, and (like the drift and quality triggers) a
        version of it the policy counts: labels about a model with no version in ``stages`` (one never
        registered, or only candidates) ask for nothing, they would only fail in the trainer."""
        since = int(state.get("labels_since") or 0)
        if since < trigger.count:
            return None
        counted: list[tuple[str, str]] = []
        for m, version in versions:
            stage = await self._counts(policy, model, version) if m == model else None
            if stage is not None:
                counted.append((version, stage))
        if not counted:
            log.info("new labels for %s: no version of it in stages %s", model, policy.stages)
            return None
        where = ", ".join(f"{v} ({stage})" if stage else v for v, stage in counted)
        return await self.request(
            model, policy, "new_labels", f"new_labels:{seq}",
            f"{since} new labelled outcomes since the last request (threshold {trigger.count}); versions {where}",
            {"labels_since": since, "versions": [v for v, _ in counted]})

    async def _schedule(self, model: str, policy: Policy, trigger: ScheduleTrigger, i: int) -> Decision | None:
        now = self._clock()
        field = f"schedule_next:{i}"
        due = await self.store.set_if_absent(model, field, trigger.next_after(now))
        if now < due:
            return None
        await self.store.set_field(model, field, trigger.next_after(now))
        what = f"cron {trigger.cron!r}" if trigger.cron else f"every {trigger.every_s:g} s"
        return await self.request(model, policy, "schedule", f"schedule:{int(due)}", f"scheduled ({what})",
                                  {"due": due})

    async def _quality(self, model: str, version: str, policy: Policy, trigger: QualityTrigger,
                       seq: int) -> Decision | None:
        if trigger.source == "feedback":
            if self._feedback_quality is None:
                return None
            got = await self._feedback_quality(model, version)
            if got is None:
                return None
            n, accuracy, log_loss = got
        else:
            outcomes = await self._recent_outcomes(model, version, trigger.window)
            n = len(outcomes)
            accuracy = sum(c for c, _ in outcomes) / n if n else None
            log_loss = sum(loss for _, loss in outcomes) / n if n else None
        value = accuracy if trigger.metric == "accuracy" else log_loss
        if n < trigger.min_labels or value is None or not math.isfinite(value) or not trigger.breached(value):
            return None
        stage = await self._counts(policy, model, version)
        if stage is None:
            return None
        bound = f"< {trigger.below}" if trigger.metric == "accuracy" else f"> {trigger.above}"
        reason = (f"{trigger.metric} {value:.4g} {bound} on version {version}{f' ({stage})' if stage else ''} "
                  f"over the last {n} labelled outcomes ({trigger.source})")
        return await self.request(model, policy, "quality", f"quality:{version}:{seq}", reason,
                                  {"version": version, "metric": trigger.metric, "value": value, "labels": n})

    async def _resend(self) -> None:
        now = self._clock()
        for record in await self.store.requests(50):
            if record["state"] == "claimed" and now - record["claimed_at"] > self._lease_s and record.get("pb"):
                msg = events_pb2.TrainingRequest.FromString(record["pb"])
                log.warning("resending training request %s left unsent", msg.request_id)
                await self._publish(msg.request_id, msg, msg.model)

    # -- queries -----------------------------------------------------------------------------------------
    async def recorded(self, model: str | None = None, limit: int = 100) -> dict[str, Any]:
        stored = await self.store.requests(self.store.max_records)
        requests = [{k: v for k, v in r.items() if k != "pb"} for r in stored]
        decisions = await self.store.decisions(self.store.max_records)
        if model:
            requests = [r for r in requests if r.get("model") == model]
            decisions = [d for d in decisions if d.get("model") == model]
        return {"policy": self.policy.model_dump(mode="json"), "requests": requests[:limit],
                "decisions": decisions[:limit]}
