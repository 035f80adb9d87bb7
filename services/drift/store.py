"""Drift state in Redis: counts and sums per model version, the recent value windows that rebuild a
detector, and the alerts. Every change goes through a Lua script that also sets the record's
``event_id`` marker, so a redelivered record changes nothing.

Keys (prefix ``mlops:drift:``): ``mv:{model}:{version}`` (hash of counts, sums, alert counts and times),
``window:{stream}:{partition}:{model}:{version}`` (recent values per partition, capped),
``done:{topic}:{event_id}`` (markers), ``alerts`` (newest first, capped), ``alert:{alert_id}`` (markers).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

PREFIX = "mlops:drift:"

# KEYS: marker, mv, window. ARGV: count_field, has_value, value, n_field, sum_field, window_max, marker_ttl,
# now. Returns {n, sum} of the stream's values after the change, or 0 for an
# event already handled.
_RECORD = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[7]) then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
if ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[5], ARGV[3])
  local cap = tonumber(ARGV[6])
  if cap > 0 then
    redis.call('RPUSH', KEYS[3], ARGV[3])
    redis.call('LTRIM', KEYS[3], -cap, -1)
  end
end
redis.call('HSET', KEYS[2], 'last_seen', ARGV[8])
return redis.call('HMGET', KEYS[2], ARGV[4], ARGV[5])
"""

# KEYS: alert marker, alerts, mv. ARGV: alert bytes, max_alerts, marker_ttl, count_field, time_field, the
# triggering record's time (what the cooldown compares).
_ALERT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
redis.call('HSET', KEYS[3], ARGV[5], ARGV[6])
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
LABEL_ERRORS = Stream("concept", "labels", "labels", "labels_scored", "error_sum")


def mv_key(model: str, version: str) -> str:
    return f"{PREFIX}mv:{model}:{version}"


def window_key(stream: Stream, model: str, version: str, partition: int) -> str:
    return f"{PREFIX}window:{stream.name}:{partition}:{model}:{version}"


class DriftStore:
    def __init__(self, redis: Redis, *, marker_ttl_s: int, window: int, max_alerts: int) -> None:
        self._redis = redis
        self.marker_ttl_s = marker_ttl_s
        self.window = window
        self.max_alerts = max_alerts
        self._record = redis.register_script(_RECORD)
        self._alert = redis.register_script(_ALERT)

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
    ) -> tuple[int, float] | None:
        """Count one event (and its value) once: the stream's (n, sum) after it, None if already counted."""
        raw = await self._record(
            keys=[
                self._marker(stream.topic, event_id),
                mv_key(model, version),
                window_key(stream, model, version, partition),
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
            ],
        )
        if not isinstance(raw, list):
            return None
        return int(raw[0] or 0), float(raw[1] or 0.0)

    async def recent(self, stream: Stream, model: str, version: str, partition: int) -> list[float]:
        """The last values of the stream from ``partition``, oldest first: what rebuilds its detector."""
        return [float(v) for v in await self._redis.lrange(window_key(stream, model, version, partition), 0, -1)]

    async def add_alert(
        self, stream: Stream, alert_id: str, alert: bytes, model: str, version: str, at: float
    ) -> bool:
        applied = await self._alert(
            keys=[f"{PREFIX}alert:{alert_id}", f"{PREFIX}alerts", mv_key(model, version)],
            args=[alert, self.max_alerts, self.marker_ttl_s, f"{stream.name}_alerts", f"{stream.name}_alert_at", at],
        )
        return bool(applied)

    async def state(self, model: str, version: str) -> dict[str, str]:
        raw = await self._redis.hgetall(mv_key(model, version))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def alerts(self, limit: int) -> list[bytes]:
        return list(await self._redis.lrange(f"{PREFIX}alerts", 0, limit - 1))
