"""The join's state in Redis, changed only by Lua scripts so that each step is atomic.

Keys (prefix ``mlops:feedback:``):

- ``pred:{id}``     the served Prediction's bytes, expiring after ``prediction_ttl_s``;
- ``held:{id}``     feedback that came before its prediction (hash: fb, partition, offset, held_at);
- ``pending``       sorted set of held prediction ids by deadline, walked by the sweep;
- ``join:{id}``     the join (hash: ``state`` = joined | expiring | expired, ``fb`` the feedback joined,
                    ``by`` the record that made the join), kept for the platform's dedup TTL: it is what
                    makes a second feedback, a redelivered record or a racing consumer a no-op, so each
                    prediction yields exactly one reward;
- ``quality:{model}:{version}`` running sums for online quality; ``quality-index`` lists the versions;
- ``stats``         counters (held, joined, duplicates, expired).

A batch is read in one script (:meth:`JoinStore.read_for_feedback`, or :meth:`JoinStore.store_predictions`,
which also stores the predictions), planned in Python (``services.feedback.plan``), and written in one
script (:meth:`JoinStore.apply`) that first checks that nothing the plan rests on has changed since the
read (another consumer may have joined one of its ids meanwhile; then nothing is written and the batch is
read again), then writes every join with its quality sums. See ``plan`` for why no claim step is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from redis.asyncio import Redis

from services.feedback.join import Quality
from services.feedback.plan import FeedbackItem, Plan, PredictionItem, Seen

PREFIX = "mlops:feedback:"

# KEYS: join, pred, held per id. ARGV: the source of each id's first record. Per id, returns: state, by,
# the feedback of a legacy claim, the prediction (when the record may join or re-emit), held (0/1).
_READ_FOR_FEEDBACK = """
local out = {}
for i = 1, #ARGV do
  local k = (i - 1) * 3
  local j = redis.call('HMGET', KEYS[k + 1], 'state', 'by', 'fb')
  local state = j[1]
  local pred = false
  local held = 0
  local fb = false
  if (not state) or state == 'claimed' or (state == 'joined' and j[2] == ARGV[i]) then
    pred = redis.call('GET', KEYS[k + 2])
  end
  if not state then held = redis.call('EXISTS', KEYS[k + 3]) end
  if state == 'claimed' then fb = j[3] end
  local o = (i - 1) * 5
  out[o + 1] = state
  out[o + 2] = j[2]
  out[o + 3] = fb
  out[o + 4] = pred
  out[o + 5] = held
end
return out
"""

# KEYS: join, pred, held per id. ARGV: prediction_ttl, then each id's prediction. Stores the predictions;
# per id, returns: state, by, the joined (or legacy claimed) feedback, the held feedback.
_STORE_PREDICTIONS = """
local out = {}
for i = 2, #ARGV do
  local k = (i - 2) * 3
  redis.call('SET', KEYS[k + 2], ARGV[i], 'EX', ARGV[1])
  local j = redis.call('HMGET', KEYS[k + 1], 'state', 'by', 'fb')
  local held = false
  if not j[1] then held = redis.call('HGET', KEYS[k + 3], 'fb') end
  local o = (i - 2) * 4
  out[o + 1] = j[1]
  out[o + 2] = j[2]
  out[o + 3] = j[3]
  out[o + 4] = held
end
return out
"""

# KEYS: pending, stats, quality-index, then join, pred, held per join, then per hold, then one quality key
# per version. ARGV: now, dedup_ttl, held_ttl, deadline, joins, holds, duplicates, versions; then per join:
# id, expected state, from prediction (1/0), feedback, by; per hold: id, feedback, partition, offset; per
# version: index member, int fields, float fields, then (field, increment) pairs.
# Checks every join and hold against the state its plan read ({'conflict'} and no write when one changed),
# then writes them all; returns {'ok', quality hash per version...}.
_APPLY = """
local nj, nh, nv = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[8])
local a = 9
for i = 0, nj - 1 do
  local k = 3 + i * 3
  local state = redis.call('HGET', KEYS[k + 1], 'state') or ''
  if state ~= ARGV[a + 1] then return {'conflict'} end
  if state == '' then
    if ARGV[a + 2] == '1' then
      if redis.call('HGET', KEYS[k + 3], 'fb') ~= ARGV[a + 3] then return {'conflict'} end
    elseif redis.call('EXISTS', KEYS[k + 2]) == 0 then
      return {'conflict'}
    end
  end
  a = a + 5
end
local hk = 3 + nj * 3
for i = 0, nh - 1 do
  local k = hk + i * 3
  if redis.call('HEXISTS', KEYS[k + 1], 'state') == 1 or redis.call('EXISTS', KEYS[k + 2]) == 1
     or redis.call('EXISTS', KEYS[k + 3]) == 1 then
    return {'conflict'}
  end
end
a = 9
for i = 0, nj - 1 do
  local k = 3 + i * 3
  redis.call('HSET', KEYS[k + 1], 'state', 'joined', 'fb', ARGV[a + 3], 'by', ARGV[a + 4])
  redis.call('HDEL', KEYS[k + 1], 'pred', 'claimed_at')
  redis.call('EXPIRE', KEYS[k + 1], ARGV[2])
  redis.call('DEL', KEYS[k + 3])
  redis.call('ZREM', KEYS[1], ARGV[a])
  a = a + 5
end
for i = 0, nh - 1 do
  local k = hk + i * 3
  redis.call('HSET', KEYS[k + 3], 'fb', ARGV[a + 1], 'partition', ARGV[a + 2], 'offset', ARGV[a + 3],
             'held_at', ARGV[1])
  redis.call('EXPIRE', KEYS[k + 3], ARGV[3])
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[a])
  a = a + 4
end
if nj > 0 then redis.call('HINCRBY', KEYS[2], 'joined', nj) end
if nh > 0 then redis.call('HINCRBY', KEYS[2], 'held', nh) end
if tonumber(ARGV[7]) > 0 then redis.call('HINCRBY', KEYS[2], 'duplicates', ARGV[7]) end
local out = {'ok'}
local qk = hk + nh * 3
for v = 1, nv do
  local key = KEYS[qk + v]
  redis.call('SADD', KEYS[3], ARGV[a])
  local ni, nf = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  for _ = 1, ni do
    redis.call('HINCRBY', key, ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  for _ = 1, nf do
    redis.call('HINCRBYFLOAT', key, ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  out[#out + 1] = redis.call('HGETALL', key)
end
return out
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


@dataclass(frozen=True, slots=True)
class Expired:
    prediction_id: str
    feedback: bytes
    partition: int
    offset: int


def index_member(model: str, version: str) -> str:
    return json.dumps([model, version])


def _text(raw: bytes | None) -> str:
    return raw.decode() if raw else ""


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
        self._read_for_feedback = redis.register_script(_READ_FOR_FEEDBACK)
        self._store_predictions = redis.register_script(_STORE_PREDICTIONS)
        self._apply = redis.register_script(_APPLY)
        self._claim_expired = redis.register_script(_CLAIM_EXPIRED)
        self._finish_expired = redis.register_script(_FINISH_EXPIRED)

    @staticmethod
    def _keys(prediction_id: str) -> list[str]:
        return [f"{PREFIX}join:{prediction_id}", f"{PREFIX}pred:{prediction_id}", f"{PREFIX}held:{prediction_id}"]

    async def read_for_feedback(self, items: list[FeedbackItem]) -> dict[str, Seen]:
        """What Redis holds for each prediction id of a feedback batch (one round trip)."""
        first: dict[str, str] = {}
        for item in items:
            first.setdefault(item.prediction_id, item.source)
        if not first:
            return {}
        keys = [k for pid in first for k in self._keys(pid)]
        raw = await self._read_for_feedback(keys=keys, args=list(first.values()))
        seen = {}
        for i, pid in enumerate(first):
            state, by, claimed_fb, prediction, held = raw[i * 5 : i * 5 + 5]
            seen[pid] = Seen(state=_text(state), by=_text(by), join_feedback=claimed_fb, prediction=prediction,
                             held=bool(held))
        return seen

    async def store_predictions(self, items: list[PredictionItem]) -> dict[str, Seen]:
        """Store a batch of predictions and return what waits for each id (one round trip)."""
        first: dict[str, bytes] = {}
        for item in items:
            first.setdefault(item.prediction_id, item.raw)
        if not first:
            return {}
        keys = [k for pid in first for k in self._keys(pid)]
        raw = await self._store_predictions(keys=keys, args=[self.prediction_ttl_s, *first.values()])
        seen = {}
        for i, pid in enumerate(first):
            state, by, join_fb, held_fb = raw[i * 4 : i * 4 + 4]
            seen[pid] = Seen(state=_text(state), by=_text(by), join_feedback=join_fb, held_feedback=held_fb,
                             held=held_fb is not None)
        return seen

    async def apply(self, plan: Plan, now: float) -> list[Quality] | None:
        """Write a batch's plan at once; None (nothing written) when what it was planned on changed."""
        keys = [f"{PREFIX}pending", f"{PREFIX}stats", f"{PREFIX}quality-index"]
        args: list[str | bytes | int | float] = [
            now, self.dedup_ttl_s, self.feedback_ttl_s + 24 * 3600, now + self.feedback_ttl_s,
            len(plan.joins), len(plan.holds), plan.duplicates, len(plan.quality),
        ]
        for join in plan.joins:
            keys.extend(self._keys(join.prediction_id))
            args.extend((join.prediction_id, join.expected_state, "1" if join.from_prediction else "0",
                         join.feedback, join.by))
        for hold in plan.holds:
            # The held hash outlives its deadline (held_ttl) so that the sweep still finds it after a pause.
            keys.extend(self._keys(hold.prediction_id))
            args.extend((hold.prediction_id, hold.raw, hold.partition, hold.offset))
        versions = list(plan.quality)
        for model, version in versions:
            delta = plan.quality[(model, version)]
            keys.append(quality_key(model, version))
            args.extend((index_member(model, version), len(delta.ints), len(delta.floats)))
            for name, n in delta.ints.items():
                args.extend((name, n))
            for name, x in delta.floats.items():
                args.extend((name, repr(x)))
        raw = await self._apply(keys=keys, args=args)
        if raw[0] == b"conflict":
            return None
        return [Quality.from_hash(model, version, dict(zip(h[::2], h[1::2], strict=True)))
                for (model, version), h in zip(versions, raw[1:], strict=True)]

    async def due(self, now: float, limit: int) -> list[str]:
        """Prediction ids whose held feedback is past its deadline."""
        ids = await self._redis.zrangebyscore(f"{PREFIX}pending", "-inf", now, start=0, num=limit)
        return [i.decode() for i in ids]

    async def claim_expired(self, prediction_id: str, now: float) -> Expired | None:
        join, _, held = self._keys(prediction_id)
        raw = await self._claim_expired(
            keys=[join, held, f"{PREFIX}pending"], args=[prediction_id, now, self.claim_lease_s, self.dedup_ttl_s]
        )
        if not raw or raw[0] is None:
            return None
        return Expired(prediction_id, raw[0], int(raw[1] or -1), int(raw[2] or -1))

    async def finish_expired(self, prediction_id: str) -> bool:
        join = self._keys(prediction_id)[0]
        return bool(await self._finish_expired(keys=[join, f"{PREFIX}pending", f"{PREFIX}stats"],
                                               args=[prediction_id]))

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
