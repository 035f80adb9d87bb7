"""Data quality per feature: how often a view's input field is missing or outside its expected range.

A view declares the fields it watches through its explicit pass-through list, its aggregations' fields,
and ``expect: {field: {min, max}}``. Counts are kept in Redis (shared by every replica, so the rates
are the service's, not one process's) and as Prometheus counters; the drift service and operators read
``GET /v1/features/quality``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from redis.asyncio import Redis

from services.feature.definitions import Definitions, FeatureView

if TYPE_CHECKING:
    from services.feature.online import OnlineEvent

QUALITY = Counter("mlops_feature_quality_total", "Feature input values by view, field and outcome.",
                  ["view", "field", "outcome"])
KEY_PREFIX = "mlops:feature:quality:"
OUTCOMES = ("events", "missing", "out_of_range")


def watched(view: FeatureView) -> dict[str, tuple[float | None, float | None]]:
    """Field -> (min, max) the view watches."""
    out: dict[str, tuple[float | None, float | None]] = {}
    if isinstance(view.passthrough, list):
        out.update((f, (None, None)) for f in view.passthrough)
    out.update((a.field, (None, None)) for a in view.aggregations if a.field)
    out.update((f, (e.min, e.max)) for f, e in view.expect.items())
    return out


class Quality:
    def __init__(self, redis: Redis, defs: Definitions) -> None:
        self._redis = redis
        self._defs = defs
        self._watched = {v.name: watched(v) for v in defs.views}

    def count(self, events: Sequence[OnlineEvent]) -> dict[tuple[str, str, str], int]:
        """(view, field, outcome) -> count for ``events``."""
        counts: dict[tuple[str, str, str], int] = defaultdict(int)
        for ev in events:
            for view in self._defs.views_for(ev.stream):
                for name, (lo, hi) in self._watched[view.name].items():
                    counts[(view.name, name, "events")] += 1
                    value = ev.fields.get(name)
                    if value is None:
                        counts[(view.name, name, "missing")] += 1
                    elif (lo is not None or hi is not None) and (
                        isinstance(value, bool) or not isinstance(value, int | float)
                        or (lo is not None and value < lo) or (hi is not None and value > hi)
                    ):
                        counts[(view.name, name, "out_of_range")] += 1
        return counts

    async def record(self, counts: dict[tuple[str, str, str], int]) -> None:
        """Add what :meth:`count` counted to the counters."""
        if not counts:
            return
        pipe = self._redis.pipeline(transaction=False)
        for (view, name, outcome), n in counts.items():
            QUALITY.labels(view, name, outcome).inc(n)
            pipe.hincrby(KEY_PREFIX + view, f"{name}:{outcome}", n)
        await pipe.execute()

    async def report(self) -> dict[str, Any]:
        pipe = self._redis.pipeline(transaction=False)
        for view in self._defs.views:
            pipe.hgetall(KEY_PREFIX + view.name)
        out: dict[str, Any] = {}
        for view, raw in zip(self._defs.views, await pipe.execute(), strict=True):
            counts = {k.decode(): int(v) for k, v in raw.items()}
            fields = {}
            for name in self._watched[view.name]:
                n = counts.get(f"{name}:events", 0)
                missing, bad = counts.get(f"{name}:missing", 0), counts.get(f"{name}:out_of_range", 0)
                fields[name] = {"events": n, "missing": missing, "out_of_range": bad,
                                "missing_rate": missing / n if n else None,
                                "out_of_range_rate": bad / n if n else None}
            out[view.name] = fields
        return {"views": out}
