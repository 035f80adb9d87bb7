"""The online store: each entity's features in one Redis hash, updated atomically with the event's
idempotency marker, so a redelivered event never applies twice; reads for many entities at once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from services.feature.definitions import Op

_APPLY = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then return 0 end
local t = tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[2], '__event_time') or '-1')
local newer = t >= last
local i = 4
while i <= #ARGV do
  local op, f, v = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if op == 'last' then
    if newer then redis.call('HSET', KEYS[2], f, v) end
  elseif op == 'incr' then
    redis.call('HINCRBYFLOAT', KEYS[2], f, v)
  elseif op == 'min' or op == 'max' then
    local cur = redis.call('HGET', KEYS[2], f)
    if (not cur) or (op == 'min' and tonumber(v) < tonumber(cur)) or (op == 'max' and tonumber(v) > tonumber(cur)) then
      redis.call('HSET', KEYS[2], f, v)
    end
  end
  i = i + 3
end
if newer then redis.call('HSET', KEYS[2], '__event_time', ARGV[2]) end
redis.call('HINCRBY', KEYS[2], '__events', 1)
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3])) end
return 1
"""


def entity_key(entity_id: str) -> str:
    return f"mlops:feature:online:{entity_id}"


def _decode_row(raw: dict[bytes, bytes]) -> tuple[dict[str, Any], datetime | None]:
    values: dict[str, Any] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    event_time = None
    for k, v in raw.items():
        name = k.decode()
        if name == "__event_time":
            event_time = datetime.fromtimestamp(int(float(v)) / 1000, tz=UTC)
        elif name.startswith("__"):
            continue
        elif name.endswith("__sum"):
            sums[name[:-5]] = float(v)
        elif name.endswith("__n"):
            counts[name[:-3]] = float(v)
        else:
            values[name] = json.loads(v)
    for name, total in sums.items():
        n = counts.get(name, 0.0)
        values[name] = total / n if n else None
    return values, event_time


class OnlineStore:
    def __init__(self, redis: Redis, marker_ttl_s: int) -> None:
        self._redis = redis
        self._marker_ttl = marker_ttl_s
        self._apply = redis.register_script(_APPLY)

    async def apply(self, event_id: str, entity_id: str, event_time_ms: int, ops: list[Op], ttl_s: int) -> bool:
        """Apply one event's ops; False when this event_id was applied before (a redelivery)."""
        args: list[str | int] = [self._marker_ttl, event_time_ms, ttl_s]
        for op in ops:
            args.extend(op)
        keys = [f"mlops:feature:applied:{event_id}", entity_key(entity_id)]
        return bool(await self._apply(keys=keys, args=args))

    async def read(self, entities: list[str], features: list[str]) -> list[dict[str, Any]]:
        pipe = self._redis.pipeline(transaction=False)
        for entity in entities:
            pipe.hgetall(entity_key(entity))
        rows = []
        for entity, raw in zip(entities, await pipe.execute(), strict=True):
            values, event_time = _decode_row(raw)
            if features:
                values = {f: values.get(f) for f in features}
            rows.append({"entity_id": entity, "values": values, "event_time": event_time, "found": bool(raw)})
        return rows
