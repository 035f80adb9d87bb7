"""The online store: each entity's feature state in Redis (a hash of values, a hash of window buckets),
changed by one Lua script per batch of events (each event atomically with its idempotency marker, see
``online_lua.py``), and read for many entities at once with windows evaluated, in Redis, at the time of
the read."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from services.feature.definitions import Aggregation, Definitions, FeatureView
from services.feature.online_lua import APPLY_BATCH, READ

KEY_PREFIX = "mlops:feature:online:"
WINDOW_PREFIX = "mlops:feature:window:"
MARKER_PREFIX = "mlops:feature:applied:"
#: events per script call: bounds how long one call holds Redis (reads wait behind it)
MAX_EVENTS_PER_CALL = 256


_PLAIN = frozenset(map(chr, range(32, 127))) - {'"', "\\"}


def json_value(value: Any) -> str:
    """A field value as the JSON text the store keeps, with fast paths for the common scalars (floats by
    ``repr``: exact; plain ASCII strings need no escaping)."""
    kind = type(value)
    if kind is float:
        return repr(value) if value == value and value not in (float("inf"), float("-inf")) else "null"
    if kind is str and _PLAIN.issuperset(value):
        return f'"{value}"'
    if kind is bool:
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"))


def _size(text: str) -> int:
    """The UTF-8 length of ``text`` (what Lua's string functions count)."""
    return len(text) if text.isascii() else len(text.encode())


@dataclass(slots=True)
class OnlineEvent:
    event_id: str
    entity_id: str
    stream: str
    time_ms: int
    fields: dict[str, Any]


@dataclass(slots=True)
class ApplyResult:
    applied: int = 0
    duplicates: int = 0
    late: int = 0


def window_groups(view: FeatureView) -> list[tuple[str, int, int, list[Aggregation]]]:
    """The view's windowed aggregations grouped by window: ``(group id, step ms, buckets, aggregations)``."""
    groups: dict[tuple[int, int], list[Aggregation]] = {}
    for agg in view.aggregations:
        if agg.window is not None:
            groups.setdefault((agg.window.step_ms, agg.window.buckets), []).append(agg)
    return [(f"{step}x{buckets}", step, buckets, aggs) for (step, buckets), aggs in groups.items()]


def _agg(agg: Aggregation) -> dict[str, Any]:
    out: dict[str, Any] = {"n": agg.name, "f": agg.fn}
    if agg.field:
        out["x"] = agg.field
    return out


def _plan(views: Sequence[FeatureView]) -> str:
    """The views that apply to one stream, as the JSON the apply script reads."""
    out = []
    for view in views:
        out.append({
            "v": view.name, "l": view.allowed_lateness_s * 1000,
            "p": view.passthrough if view.passthrough == "*" else list(view.passthrough),
            "a": [_agg(a) for a in view.aggregations if a.window is None],
            "g": [{"id": gid, "s": step, "b": buckets, "a": [_agg(a) for a in aggs]}
                  for gid, step, buckets, aggs in window_groups(view)],
        })
    # cjson reads an empty JSON array as an empty table, as the script wants.
    return json.dumps(out, separators=(",", ":"))


def _read_plan(defs: Definitions) -> str:
    """Every view's aggregations and TTLs, as the JSON the read script reads."""
    return json.dumps({
        "ttl": {v.name: v.ttl_s * 1000 for v in defs.views},
        "a": [{"n": a.name, "v": v.name, "f": a.fn} for v in defs.views for a in v.aggregations if a.window is None],
        "g": [{"v": v.name, "id": gid, "s": step, "b": buckets, "a": [{"n": a.name, "f": a.fn} for a in aggs]}
              for v in defs.views for gid, step, buckets, aggs in window_groups(v)],
    }, separators=(",", ":"))


class OnlineStore:
    def __init__(self, redis: Redis, defs: Definitions, marker_ttl_s: int) -> None:
        self._redis = redis
        self.defs = defs
        self._marker_ttl = marker_ttl_s
        self._key_ttl = defs.max_key_ttl()
        self._apply = redis.register_script(APPLY_BATCH)
        self._read = redis.register_script(READ)
        self._read_plan = _read_plan(defs)
        self._plans: dict[str, str] = {}

    def _plan_for(self, stream: str) -> str:
        plan = self._plans.get(stream)
        if plan is None:
            plan = self._plans[stream] = _plan(self.defs.views_for(stream))
        return plan

    async def apply(self, events: Sequence[OnlineEvent]) -> ApplyResult:
        """Apply ``events`` in order; an event_id applied before (a redelivery) changes nothing."""
        return await self.apply_encoded(self.encode(events))

    def encode(self, events: Sequence[OnlineEvent]) -> list[list[str | int]]:
        """The apply script's arguments for ``events``, one call per ``MAX_EVENTS_PER_CALL`` (CPU only:
        done while other batches are in Redis)."""
        calls = []
        for start in range(0, len(events), MAX_EVENTS_PER_CALL):
            chunk = events[start : start + MAX_EVENTS_PER_CALL]
            plan_index: dict[str, str] = {}
            plans: list[str] = []
            parts: list[str] = []
            for ev in chunk:
                idx = plan_index.get(ev.stream)
                if idx is None:
                    plans.append(self._plan_for(ev.stream))
                    idx = plan_index[ev.stream] = str(len(plans))
                event_id, entity = ev.event_id, ev.entity_id
                parts.append(f"{_size(event_id)}:{event_id}{_size(entity)}:{entity}{idx}\x1e{ev.time_ms}")
                for name, value in ev.fields.items():
                    parts.append(f"\x1e{name}\x1e{json_value(value)}")
                parts.append("\x1c")
            calls.append([MARKER_PREFIX, KEY_PREFIX, WINDOW_PREFIX, self._marker_ttl, self._key_ttl,
                          len(plans), *plans, "".join(parts)])
        return calls

    async def apply_encoded(self, calls: Sequence[list[str | int]]) -> ApplyResult:
        """Run the calls :meth:`encode` made, in order, sent together (one round trip: Redis runs them
        back to back instead of waiting for this process between them; each is still its own script, so
        other clients' commands, reads included, run between them)."""
        result = ApplyResult()
        if len(calls) == 1:
            replies = [await self._apply(args=calls[0])]
        else:
            pipe = self._redis.pipeline(transaction=False)
            for args in calls:
                await self._apply(args=args, client=pipe)
            replies = await pipe.execute()
        for applied, dupes, late in replies:
            result.applied += int(applied)
            result.duplicates += int(dupes)
            result.late += int(late)
        return result

    async def read_items(self, entities: Sequence[str], as_of: datetime | None = None) -> list[Any]:
        """Per entity, ``[features, last event time ms]`` or None (no features): the script's reply as is,
        for adapters that build their own response (gRPC) without the rows of :meth:`read`."""
        now_ms = int((as_of or datetime.now(UTC)).timestamp() * 1000)
        keys = [k for e in entities for k in (KEY_PREFIX + e, WINDOW_PREFIX + e)]
        found: list[Any] = json.loads(await self._read(keys=keys, args=[now_ms, self._read_plan]))
        return found

    async def read(self, entities: Sequence[str], features: Sequence[str], as_of: datetime | None = None
                   ) -> list[dict[str, Any]]:
        """Each entity's features (all, or ``features``), windows evaluated at ``as_of`` (default: now)."""
        found = await self.read_items(entities, as_of)
        rows = []
        for entity, item in zip(entities, found, strict=True):
            values, event_time = item if item is not None else ({}, None)
            if features:
                values = {f: values.get(f) for f in features}
            rows.append({
                "entity_id": entity, "values": values, "found": item is not None,
                "event_time": datetime.fromtimestamp(event_time / 1000, tz=UTC) if event_time is not None else None,
            })
        return rows
