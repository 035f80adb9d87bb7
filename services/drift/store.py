"""Drift state in Redis, shared by every replica: counts and sums per model version, the recent windows
that rebuild detectors and data-drift windows after a restart, the last scores, the alerts (with their
evidence and the cooldown), and dead-letter counts. Every change that must happen once per record goes
through a Lua script that also sets the record's ``event_id`` marker, so a redelivered record changes
nothing.

Keys (prefix ``mlops:drift:``):

- ``mv:{model}:{version}``  hash: counts and sums, ``<kind>_alerts`` / ``<kind>_alert_at`` /
  ``<kind>_suppressed``, ``scores:<check>`` (JSON of the latest evaluation), ``state:<check>`` (hysteresis);
- ``versions``  set of ``[model, version]`` seen;
- ``window:{stream}:{partition}:{model}:{version}``  recent values of a sequential stream (capped);
- ``rows:{model}:{version}``  recent prediction feature rows and scores, JSON (capped): the data-drift window;
- ``outcomes:{model}:{version}``  recent labelled outcomes ``correct,loss`` (capped): windowed quality;
- ``done:{topic}:{event_id}``  markers; ``alerts`` newest first (capped); ``alert:{id}`` markers;
  ``evidence:{id}`` each alert's evidence (JSON);
- ``dlq:{minute}``  hash of dead letters per source topic in that minute; ``dlq-state`` alerting topics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

PREFIX = "mlops:drift:"

# KEYS: marker, mv, window, rows, outcomes, versions, retrain-model.
# ARGV: 1 count_field, 2 has_value, 3 value, 4 n_field, 5 sum_field, 6 window_max, 7 marker_ttl, 8 now,
#       9 row ('' for none), 10 rows_max, 11 outcome ('' for none), 12 outcomes_max, 13 versions member,
#       14 extra sum field ('' for none), 15 extra value.
# Returns {n, sum} of the stream's values after the change, or 0 for an event already handled.
_RECORD = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[7]) then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('SADD', KEYS[6], ARGV[13])
if ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[5], ARGV[3])
  local cap = tonumber(ARGV[6])
  if cap > 0 then
    redis.call('RPUSH', KEYS[3], ARGV[3])
    redis.call('LTRIM', KEYS[3], -cap, -1)
  end
end
if ARGV[14] ~= '' then redis.call('HINCRBYFLOAT', KEYS[2], ARGV[14], ARGV[15]) end
if ARGV[9] ~= '' then
  redis.call('RPUSH', KEYS[4], ARGV[9])
  redis.call('LTRIM', KEYS[4], -tonumber(ARGV[10]), -1)
end
if ARGV[11] ~= '' then
  redis.call('RPUSH', KEYS[5], ARGV[11])
  redis.call('LTRIM', KEYS[5], -tonumber(ARGV[12]), -1)
  redis.call('HINCRBY', KEYS[7], 'labels_since', 1)
  redis.call('HINCRBY', KEYS[7], 'labels', 1)
end
redis.call('HSET', KEYS[2], 'last_seen', ARGV[8])
return redis.call('HMGET', KEYS[2], ARGV[4], ARGV[5])
"""

# KEYS: alert marker, alerts, mv, evidence. ARGV: 1 alert bytes, 2 max_alerts, 3 marker_ttl, 4 count_field,
# 5 time_field, 6 the triggering record's time, 7 cooldown_s, 8 evidence JSON, 9 suppressed_field.
# Returns 2 when the alert was stored before (produce it again: an earlier try may have crashed before
# producing), 1 when stored now, 0 when another alert of the kind is within the cooldown (in record time,
# across every replica and partition).
_ALERT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 2 end
local last = redis.call('HGET', KEYS[3], ARGV[5])
if last and math.abs(tonumber(ARGV[6]) - tonumber(last)) < tonumber(ARGV[7]) then
  redis.call('HINCRBY', KEYS[3], ARGV[9], 1)
  return 0
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[3])
redis.call('SET', KEYS[4], ARGV[8], 'EX', ARGV[3])
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
redis.call('HSET', KEYS[3], ARGV[5], ARGV[6])
return 1
"""

# KEYS: marker, minute hash. ARGV: source topic, marker_ttl, bucket_ttl. 1 when counted, 0 for a repeat.
_DEAD_LETTER = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class Stream:
    """One monitored stream of a model version: which counters and window it updates."""

    name: str  # window name and alert kind
    topic: str
    count_field: str
    n_field: str
    sum_field: str


PREDICTION_SCORES = Stream("prediction", "predictions", "predictions", "scored", "score_sum")
LABEL_LOSSES = Stream("concept", "labels", "labels", "labels_scored", "loss_sum")
DEAD_LETTERS_TOPIC = "events.deadletter"


def mv_key(model: str, version: str) -> str:
    return f"{PREFIX}mv:{model}:{version}"


def window_key(stream: Stream, model: str, version: str, partition: int) -> str:
    return f"{PREFIX}window:{stream.name}:{partition}:{model}:{version}"


def retrain_model_key(model: str) -> str:
    """Shared with the retraining store: per-model counters the label path increments."""
    return f"{PREFIX}retrain:model:{model}"


@dataclass(frozen=True, slots=True)
class Extra:
    """What a record adds beside its stream value: a feature row, a labelled outcome, a second sum."""

    row: str = ""
    outcome: str = ""
    sum_field: str = ""
    sum_value: float = 0.0


class DriftStore:
    def __init__(
        self,
        redis: Redis,
        *,
        marker_ttl_s: int,
        window: int,
        max_alerts: int,
        rows_window: int = 500,
        outcomes_window: int = 2000,
    ) -> None:
        self._redis = redis
        self.marker_ttl_s = marker_ttl_s
        self.window = window
        self.max_alerts = max_alerts
        self.rows_window = rows_window
        self.outcomes_window = outcomes_window
        self._record = redis.register_script(_RECORD)
        self._alert = redis.register_script(_ALERT)
        self._dead_letter = redis.register_script(_DEAD_LETTER)

    def _marker(self, topic: str, event_id: str) -> str:
        return f"{PREFIX}done:{topic}:{event_id}"

    async def seen(self, stream: Stream, event_id: str) -> bool:
        return bool(await self._redis.exists(self._marker(stream.topic, event_id)))

    async def record(
        self,
        stream: Stream,
        event_id: str,
        model: str,
        version: str,
        partition: int,
        value: float | None,
        now: float,
        extra: Extra | None = None,
    ) -> tuple[int, float] | None:
        """Count one event (and its value, row, outcome) once: the stream's (n, sum) after it, None if
        it was already counted."""
        extra = extra or Extra()
        raw = await self._record(
            keys=[
                self._marker(stream.topic, event_id),
                mv_key(model, version),
                window_key(stream, model, version, partition),
                f"{PREFIX}rows:{model}:{version}",
                f"{PREFIX}outcomes:{model}:{version}",
                f"{PREFIX}versions",
                retrain_model_key(model),
            ],
            args=[
                stream.count_field,
                "0" if value is None else "1",
                repr(float(value or 0.0)),
                stream.n_field,
                stream.sum_field,
                self.window,
                self.marker_ttl_s,
                now,
                extra.row,
                self.rows_window,
                extra.outcome,
                self.outcomes_window,
                json.dumps([model, version]),
                extra.sum_field,
                repr(float(extra.sum_value)),
            ],
        )
        if not isinstance(raw, list):
            return None
        return int(raw[0] or 0), float(raw[1] or 0.0)

    async def recent(self, stream: Stream, model: str, version: str, partition: int) -> list[float]:
        """The last values of the stream from ``partition``, oldest first: what rebuilds its detector."""
        return [float(v) for v in await self._redis.lrange(window_key(stream, model, version, partition), 0, -1)]

    async def rows(self, model: str, version: str) -> list[str]:
        """The data-drift window's rows (JSON), oldest first."""
        return [r.decode() for r in await self._redis.lrange(f"{PREFIX}rows:{model}:{version}", 0, -1)]

    async def outcomes(self, model: str, version: str, n: int) -> list[tuple[float, float]]:
        """The last ``n`` labelled outcomes (correct, loss), oldest first."""
        raw = await self._redis.lrange(f"{PREFIX}outcomes:{model}:{version}", -n, -1)
        out = []
        for item in raw:
            correct, loss = item.decode().split(",")
            out.append((float(correct), float(loss)))
        return out

    async def add_alert(
        self,
        kind: str,
        alert_id: str,
        alert: bytes,
        model: str,
        version: str,
        at: float,
        cooldown_s: float,
        evidence: str,
    ) -> int:
        """Store an alert unless one of its kind is within the cooldown: 1 stored, 2 stored before, 0 cooled."""
        return int(
            await self._alert(
                keys=[
                    f"{PREFIX}alert:{alert_id}",
                    f"{PREFIX}alerts",
                    mv_key(model, version),
                    f"{PREFIX}evidence:{alert_id}",
                ],
                args=[
                    alert, self.max_alerts, self.marker_ttl_s, f"{kind}_alerts", f"{kind}_alert_at", at, cooldown_s,
                    evidence, f"{kind}_suppressed",
                ],
            )
        )

    async def state(self, model: str, version: str) -> dict[str, str]:
        raw = await self._redis.hgetall(mv_key(model, version))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def put_fields(self, model: str, version: str, fields: dict[str, str]) -> None:
        """Latest scores and hysteresis states: plain writes, the last writer is right."""
        await self._redis.hset(mv_key(model, version), mapping=fields)  # type: ignore[misc]

    async def versions(self) -> list[tuple[str, str]]:
        members = await self._redis.smembers(f"{PREFIX}versions")
        return sorted(tuple(json.loads(m)) for m in members)  # type: ignore[misc]

    async def alerts(self, limit: int) -> list[bytes]:
        return list(await self._redis.lrange(f"{PREFIX}alerts", 0, limit - 1))

    async def evidence(self, alert_ids: list[str]) -> list[dict[str, Any] | None]:
        if not alert_ids:
            return []
        raw = await self._redis.mget([f"{PREFIX}evidence:{a}" for a in alert_ids])
        return [json.loads(r) if r else None for r in raw]

    # -- dead letters ------------------------------------------------------------------------------------
    async def count_dead_letter(self, event_id: str, source_topic: str, minute: int, window_s: float) -> bool:
        return bool(
            await self._dead_letter(
                keys=[self._marker(DEAD_LETTERS_TOPIC, event_id), f"{PREFIX}dlq:{minute}"],
                args=[source_topic, self.marker_ttl_s, int(window_s) + 180],
            )
        )

    async def dead_letters(self, minutes: list[int]) -> dict[str, int]:
        """Dead letters per source topic over the given minutes."""
        pipe = self._redis.pipeline(transaction=False)
        for m in minutes:
            pipe.hgetall(f"{PREFIX}dlq:{m}")
        out: dict[str, int] = {}
        for h in await pipe.execute():
            for k, v in h.items():
                out[k.decode()] = out.get(k.decode(), 0) + int(v)
        return out

    async def dead_letter_state(self) -> set[str]:
        return {m.decode() for m in await self._redis.smembers(f"{PREFIX}dlq-state")}

    async def set_dead_letter_state(self, topic: str, alerting: bool) -> bool:
        """Enter or leave the alerting state for a source topic; True when this call changed it."""
        key = f"{PREFIX}dlq-state"
        changed = await (self._redis.sadd(key, topic) if alerting else self._redis.srem(key, topic))
        return bool(changed)
