"""The join's state in Redis, changed only by Lua scripts so that each step is atomic.

Keys (prefix ``mlops:feedback:``):

- ``pred:{id}``     the served Prediction's bytes, expiring after ``prediction_ttl_s``;
- ``held:{id}``     feedback that came before its prediction (hash: fb, partition, offset, held_at);
- ``pending``       sorted set of held prediction ids by deadline, walked by the sweep;
- ``join:{id}``     the join's outcome (hash ``state`` = claimed | emitted | expiring | expired), kept for
                    the platform's dedup TTL: it is what makes a second feedback, a redelivered record or
                    a racing consumer a no-op, so each prediction yields exactly one reward;
- ``quality:{model}:{version}`` running sums for online quality; ``quality-index`` lists the versions;
- ``stats``         counters (held, joined, duplicates, expired).

A join is claimed first (the record to emit is kept in ``join:{id}``), emitted to Kafka, then finished,
which also adds to the quality sums. A claim older than ``claim_lease_s`` that was never finished
(a crash between claim and finish) is taken over by whichever delivery comes next and re-emitted with
the same event_ids; a younger one makes the caller retry later, so two live consumers never both emit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from services.feedback.join import Outcome, Quality, calibration_bin

PREFIX = "mlops:feedback:"

# KEYS: join, pred, held, pending. ARGV: id, fb, partition, offset, now, deadline, held_ttl, dedup_ttl, lease.
_ON_FEEDBACK = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'claimed' then
  local at = tonumber(redis.call('HGET', KEYS[1], 'claimed_at') or '0')
  if at + tonumber(ARGV[9]) > tonumber(ARGV[5]) then return {'busy'} end
  redis.call('HSET', KEYS[1], 'claimed_at', ARGV[5])
  return {'joined', redis.call('HGET', KEYS[1], 'pred'), redis.call('HGET', KEYS[1], 'fb')}
end
if state then
  redis.call('HINCRBY', KEYS[5], 'duplicates', 1)
  return {'duplicate'}
end
local pred = redis.call('GET', KEYS[2])
if pred then
  redis.call('HSET', KEYS[1], 'state', 'claimed', 'pred', pred, 'fb', ARGV[2], 'claimed_at', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  return {'joined', pred, ARGV[2]}
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[5], 'duplicates', 1)
  return {'duplicate'}
end
redis.call('HSET', KEYS[3], 'fb', ARGV[2], 'partition', ARGV[3], 'offset', ARGV[4], 'held_at', ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[1])
redis.call('HINCRBY', KEYS[5], 'held', 1)
return {'held'}
"""

# KEYS: join, pred, held, pending. ARGV: id, prediction, prediction_ttl, now, dedup_ttl, lease.
_ON_PREDICTION = """
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'claimed' then
  local at = tonumber(redis.call('HGET', KEYS[1], 'claimed_at') or '0')
  if at + tonumber(ARGV[6]) > tonumber(ARGV[4]) then return {'busy'} end
  redis.call('HSET', KEYS[1], 'claimed_at', ARGV[4])
  return {'joined', redis.call('HGET', KEYS[1], 'pred'), redis.call('HGET', KEYS[1], 'fb')}
end
if state then return {'stored'} end
local fb = redis.call('HGET', KEYS[3], 'fb')
if fb then
  redis.call('HSET', KEYS[1], 'state', 'claimed', 'pred', ARGV[2], 'fb', fb, 'claimed_at', ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[1])
  return {'joined', ARGV[2], fb}
end
return {'stored'}
"""

# KEYS: join, quality, quality-index, stats. ARGV: index member, reward, labeled, correct, has_value, value,
# has_log_loss, log_loss, calibration bin ('' for none), confidence. Returns the quality hash, or nil when
# the join was already finished.
_FINISH = """
if redis.call('HGET', KEYS[1], 'state') ~= 'claimed' then return nil end
redis.call('HSET', KEYS[1], 'state', 'emitted')
redis.call('HDEL', KEYS[1], 'pred', 'fb', 'claimed_at')
redis.call('HINCRBY', KEYS[4], 'joined', 1)
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[2], 'count', 1)
redis.call('HINCRBYFLOAT', KEYS[2], 'reward_sum', ARGV[2])
if ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[2], 'labeled', 1)
  redis.call('HINCRBY', KEYS[2], 'correct', tonumber(ARGV[4]))
end
if ARGV[5] == '1' then
  redis.call('HINCRBY', KEYS[2], 'value_count', 1)
  redis.call('HINCRBYFLOAT', KEYS[2], 'value_sum', ARGV[6])
end
if ARGV[7] == '1' then
  redis.call('HINCRBY', KEYS[2], 'log_loss_count', 1)
  redis.call('HINCRBYFLOAT', KEYS[2], 'log_loss_sum', ARGV[8])
end
if ARGV[9] ~= '' then
  redis.call('HINCRBY', KEYS[2], 'cal_n:' .. ARGV[9], 1)
  redis.call('HINCRBYFLOAT', KEYS[2], 'cal_conf:' .. ARGV[9], ARGV[10])
  redis.call('HINCRBY', KEYS[2], 'cal_ok:' .. ARGV[9], tonumber(ARGV[4]))
end
return redis.call('HGETALL', KEYS[2])
"""

# KEYS: join, held, pending. ARGV: id, now, lease, dedup_ttl.
# Claims held feedback past its deadline for dead-lettering; the pending entry is pushed out by the lease
# and only removed by _FINISH_EXPIRED, so a crash before the dead letter is sent is retried.
_CLAIM_EXPIRED = """
local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if (not score) or tonumber(score) > tonumber(ARGV[2]) then return nil end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'expiring' then
  redis.call('ZADD', KEYS[3], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
  return redis.call('HMGET', KEYS[1], 'fb', 'partition', 'offset')
end
if state then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return nil
end
local held = redis.call('HMGET', KEYS[2], 'fb', 'partition', 'offset')
if not held[1] then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return nil
end
redis.call('HSET', KEYS[1], 'state', 'expiring', 'fb', held[1], 'partition', held[2], 'offset', held[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('DEL', KEYS[2])
redis.call('ZADD', KEYS[3], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
return held
"""

# KEYS: join, pending, stats. ARGV: id.
_FINISH_EXPIRED = """
if redis.call('HGET', KEYS[1], 'state') ~= 'expiring' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'expired')
redis.call('HDEL', KEYS[1], 'fb', 'partition', 'offset')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'expired', 1)
return 1
"""

FeedbackResult = Literal["joined", "held", "duplicate", "busy", "stored"]


@dataclass(frozen=True, slots=True)
class JoinStep:
    """What a script decided; ``prediction``/``feedback`` are set when the caller must emit the join."""

    result: FeedbackResult
    prediction: bytes | None = None
    feedback: bytes | None = None


@dataclass(frozen=True, slots=True)
class Expired:
    prediction_id: str
    feedback: bytes
    partition: int
    offset: int


def _step(raw: list[bytes]) -> JoinStep:
    result = raw[0].decode()
    if result == "joined":
        return JoinStep("joined", raw[1], raw[2])
    return JoinStep(result)  # type: ignore[arg-type]


def index_member(model: str, version: str) -> str:
    return json.dumps([model, version])


class JoinStore:
    """The scripts above, bound to one Redis and the service's TTLs."""

    def __init__(
        self,
        redis: Redis,
        *,
        prediction_ttl_s: int,
        feedback_ttl_s: int,
        dedup_ttl_s: int,
        claim_lease_s: float,
    ) -> None:
        self._redis = redis
        self.prediction_ttl_s = prediction_ttl_s
        self.feedback_ttl_s = feedback_ttl_s
        # A join marker must outlive both waits, or a late duplicate could join a second time.
        self.dedup_ttl_s = max(dedup_ttl_s, prediction_ttl_s, feedback_ttl_s) + 3600
        self.claim_lease_s = claim_lease_s
        self._on_feedback = redis.register_script(_ON_FEEDBACK)
        self._on_prediction = redis.register_script(_ON_PREDICTION)
        self._finish = redis.register_script(_FINISH)
        self._claim_expired = redis.register_script(_CLAIM_EXPIRED)
        self._finish_expired = redis.register_script(_FINISH_EXPIRED)

    @staticmethod
    def _keys(prediction_id: str) -> list[str]:
        return [
            f"{PREFIX}join:{prediction_id}",
            f"{PREFIX}pred:{prediction_id}",
            f"{PREFIX}held:{prediction_id}",
            f"{PREFIX}pending",
            f"{PREFIX}stats",
        ]

    async def on_feedback(
        self, prediction_id: str, feedback: bytes, partition: int, offset: int, now: float
    ) -> JoinStep:
        deadline = now + self.feedback_ttl_s
        # The held hash outlives its deadline so that the sweep still finds it after a pause.
        held_ttl = self.feedback_ttl_s + 24 * 3600
        raw = await self._on_feedback(
            keys=self._keys(prediction_id),
            args=[
                prediction_id, feedback, partition, offset, now, deadline, held_ttl, self.dedup_ttl_s,
                self.claim_lease_s,
            ],
        )
        return _step(raw)

    async def on_prediction(self, prediction_id: str, prediction: bytes, now: float) -> JoinStep:
        raw = await self._on_prediction(
            keys=self._keys(prediction_id)[:4],
            args=[prediction_id, prediction, self.prediction_ttl_s, now, self.dedup_ttl_s, self.claim_lease_s],
        )
        return _step(raw)

    async def finish(self, prediction_id: str, model: str, version: str, result: Outcome) -> Quality | None:
        """Mark the join emitted and add its outcome to the quality sums; None if it already was."""
        raw = await self._finish(
            keys=[
                f"{PREFIX}join:{prediction_id}",
                quality_key(model, version),
                f"{PREFIX}quality-index",
                f"{PREFIX}stats",
            ],
            args=[
                index_member(model, version),
                repr(result.reward),
                "1" if result.correct is not None else "0",
                "1" if result.correct else "0",
                "1" if result.value is not None else "0",
                repr(result.value or 0.0),
                "1" if result.log_loss is not None else "0",
                repr(result.log_loss or 0.0),
                "" if result.confidence is None else str(calibration_bin(result.confidence)),
                repr(result.confidence or 0.0),
            ],
        )
        if raw is None:
            return None
        return Quality.from_hash(model, version, dict(zip(raw[::2], raw[1::2], strict=True)))

    async def due(self, now: float, limit: int) -> list[str]:
        """Prediction ids whose held feedback is past its deadline."""
        ids = await self._redis.zrangebyscore(f"{PREFIX}pending", "-inf", now, start=0, num=limit)
        return [i.decode() for i in ids]

    async def claim_expired(self, prediction_id: str, now: float) -> Expired | None:
        keys = self._keys(prediction_id)
        raw = await self._claim_expired(
            keys=[keys[0], keys[2], keys[3]], args=[prediction_id, now, self.claim_lease_s, self.dedup_ttl_s]
        )
        if not raw or raw[0] is None:
            return None
        return Expired(prediction_id, raw[0], int(raw[1] or -1), int(raw[2] or -1))

    async def finish_expired(self, prediction_id: str) -> bool:
        keys = self._keys(prediction_id)
        return bool(await self._finish_expired(keys=[keys[0], keys[3], keys[4]], args=[prediction_id]))

    async def quality(self, model: str, version: str) -> Quality | None:
        raw = await self._redis.hgetall(quality_key(model, version))
        return Quality.from_hash(model, version, raw) if raw else None

    async def versions(self) -> list[tuple[str, str]]:
        members = await self._redis.smembers(f"{PREFIX}quality-index")
        out = []
        for m in members:
            model, version = json.loads(m)
            out.append((model, version))
        return sorted(out)

    async def stats(self) -> dict[str, int]:
        raw = await self._redis.hgetall(f"{PREFIX}stats")
        out = {k.decode(): int(v) for k, v in raw.items()}
        out["pending"] = int(await self._redis.zcard(f"{PREFIX}pending"))
        return out


def quality_key(model: str, version: str) -> str:
    return f"{PREFIX}quality:{model}:{version}"
