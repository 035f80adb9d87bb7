"""Point-in-time feature values from the offline store: the value a feature had *as of* a moment.

The rule: a row with event time ``t`` sees only events with event time ``<= t``. A pass-through
feature is the value of the latest such event that carried the field; an aggregation is computed over
the events of its view's streams up to ``t`` (whole history, or the window that holds ``t``: the same
buckets the online store reads at time ``t``); a view whose latest event is older than its ``ttl_s``
gives nulls. So a training row never sees the future, and its values are what an online read at ``t``
would have returned, except for events that arrived later than a window's allowed lateness (the
offline store has them all; the online store dropped them from its windows).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops.errors import InvalidArgument
from services.feature import offline
from services.feature.definitions import Aggregation, Definitions, FeatureView
from services.feature.online import json_value


@dataclass
class Source:
    """Where a requested feature's values come from."""

    name: str
    kind: str  # "passthrough" | "aggregation"
    views: list[FeatureView]
    streams: list[str]
    agg: Aggregation | None = None
    field: str = ""

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "views": [v.name for v in self.views], "streams": self.streams}
        if self.agg:
            out["fn"] = self.agg.fn
            if self.agg.field:
                out["field"] = self.agg.field
            if self.agg.window:
                out["window"] = self.agg.window.model_dump()
        return out


def resolve(defs: Definitions, name: str, stored: Sequence[str]) -> Source:
    """The source of feature ``name`` (an aggregation, a pass-through field, or ``view:field``)."""
    if name in defs.aggregations:
        view, agg = defs.aggregations[name]
        return Source(name, "aggregation", [view], [s for s in stored if view.applies_to(s)], agg=agg)
    view_name, sep, field_name = name.partition(":")
    if sep:
        view = defs.views_by_name.get(view_name)
        if view is None:
            raise InvalidArgument(f"feature {name!r}: there is no view {view_name!r}", field="features")
        candidates = [view]
    else:
        field_name = name
        candidates = list(defs.views)
    views = [v for v in candidates if v.passthrough == "*" or field_name in v.passthrough]
    if not views:
        raise InvalidArgument(f"{name!r} is neither a field of the label rows nor a defined feature", field="features")
    return Source(name, "passthrough", views, [s for s in stored if any(v.applies_to(s) for v in views)],
                  field=field_name)


@dataclass
class _History:
    """One entity's events from one set of streams, ordered by event time."""

    times: list[int] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _aggregate(agg: Aggregation, rows: list[dict[str, Any]], times: list[int]) -> Any:
    values = rows if agg.fn == "count" and not agg.field else [r for r in rows if r.get(agg.field or "") is not None]
    if agg.fn == "count":
        return len(values)
    if agg.fn == "last":
        return values[-1][agg.field or ""] if values else None
    if agg.fn == "distinct_count":
        return len({json_value(r[agg.field or ""]) for r in values})
    nums = [x for r in values if (x := _number(r[agg.field or ""])) is not None]
    if agg.fn == "sum":
        return sum(nums)
    if agg.fn == "mean":
        return sum(nums) / len(nums) if nums else None
    if agg.fn == "min":
        return min(nums) if nums else None
    return max(nums) if nums else None


class PointInTime:
    """Computes features as of each (entity, time) from the offline store, reading each stream once."""

    def __init__(self, defs: Definitions, root: Path) -> None:
        self.defs = defs
        self.root = root
        self._rows: dict[str, list[dict[str, Any]]] = {}
        self.files_read = 0

    def _load(self, sources: dict[str, Source], until: datetime | None, entities: set[str]) -> None:
        """Read every stream the sources need once: only the entities and columns asked for."""
        columns: dict[str, set[str]] = defaultdict(set)
        for src in sources.values():
            column = src.field or (src.agg.field if src.agg else None)
            for stream in src.streams:
                columns[stream].update([column] if column else [])
        for stream, cols in columns.items():
            self.files_read += len(offline.files(self.root, stream))
            rows = offline.read_stream(self.root, stream, entities=entities, columns=cols)
            self._rows[stream] = [r for r in rows if until is None or r["event_time"] <= until]

    def _histories(self, streams: list[str]) -> dict[str, _History]:
        merged: dict[str, list[tuple[int, str, dict[str, Any], str]]] = defaultdict(list)
        for s in streams:
            for r in self._rows.get(s, []):
                merged[r["entity_id"]].append((_ms(r["event_time"]), r["event_id"], r, s))
        out: dict[str, _History] = {}
        for entity, items in merged.items():
            items.sort(key=lambda x: (x[0], x[1]))
            out[entity] = _History([x[0] for x in items], [x[2] for x in items], [x[3] for x in items])
        return out

    def compute(self, rows: Sequence[tuple[str, datetime]], names: Sequence[str]
                ) -> tuple[list[dict[str, Any]], dict[str, Source]]:
        """For each (entity, time), the values of features ``names`` as of that time."""
        stored = offline.streams(self.root)
        sources = {n: resolve(self.defs, n, stored) for n in names}
        for src in sources.values():
            if src.kind == "passthrough":  # only the streams that ever carried the field
                src.streams = [s for s in src.streams if offline.has_column(self.root, s, src.field)]
                if not src.streams:
                    raise InvalidArgument(f"{src.name!r} is neither a field of the label rows nor a defined "
                                          "feature with values in the offline store", field="features")
        entities = {e for e, _ in rows}
        self._load(sources, max((t for _, t in rows), default=None), entities)
        out: list[dict[str, Any]] = [{} for _ in rows]
        cache: dict[tuple[str, ...], dict[str, _History]] = {}
        for name, src in sources.items():
            key = tuple(src.streams)
            if key not in cache:
                cache[key] = self._histories(src.streams)
            histories = cache[key]
            for i, (entity, t) in enumerate(rows):
                h = histories.get(entity)
                out[i][name] = self._value(src, h, _ms(t)) if h else None
        return out, sources

    def _value(self, src: Source, h: _History, t_ms: int) -> Any:
        end = bisect.bisect_right(h.times, t_ms)
        if src.kind == "passthrough":
            for j in range(end - 1, -1, -1):
                value = h.rows[j].get(src.field)
                if value is None:
                    continue
                views = [v for v in src.views if v.applies_to(h.streams[j])]
                if all(v.ttl_s and t_ms - h.times[j] > v.ttl_s * 1000 for v in views):
                    return None
                return value
            return None
        view, agg = src.views[0], src.agg
        assert agg is not None
        if end == 0:
            return None  # the view has not seen the entity yet
        if view.ttl_s and t_ms - h.times[end - 1] > view.ttl_s * 1000:
            return None
        start = 0
        if agg.window is not None:
            step = agg.window.step_ms
            first_bucket = t_ms // step - agg.window.buckets + 1
            start = bisect.bisect_left(h.times, first_bucket * step)
        return _aggregate(agg, h.rows[start:end], h.times[start:end])

