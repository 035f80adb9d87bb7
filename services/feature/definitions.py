"""Declarative feature definitions (YAML in the repo, ``MLOPS_FEATURE_DEFINITIONS``).

A *feature view* says which streams feed an entity's features (``stream``: a name or a glob such as
``payments*``), which event fields pass through as features (last value by event time), which
aggregations to keep (count, sum, mean, min, max, last, distinct_count), each over the entity's whole
history or over a tumbling or sliding window, how late an event may arrive and still count in a
window (``allowed_lateness_s``), and after how long without an update its values are stale (``ttl_s``).

The same definitions drive the online store (``online.py``, in Redis) and the offline, point-in-time
computation of training sets (``pit.py``), so a feature means the same thing in both.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops.errors import InvalidArgument

AggFn = Literal["count", "sum", "mean", "min", "max", "last", "distinct_count"]
#: functions that need a numeric field value (others take any value, or none for count)
NUMERIC_FNS = frozenset({"sum", "mean", "min", "max"})
MAX_BUCKETS = 1440  # buckets per sliding window: bounds the work of one update and one read

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


def parse_duration(value: Any) -> int:
    """``90``, ``"90s"``, ``"5m"``, ``"1h"``, ``"7d"`` -> whole seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = int(m.group(1)) * _UNITS_S[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration (seconds, or a string such as '90s', '5m', '1h', '7d')")
    if seconds < 0 or seconds != int(seconds):
        raise ValueError(f"durations are whole non-negative seconds, got {value!r}")
    return int(seconds)


class Window(BaseModel):
    """A tumbling window (``size_s``) or a sliding one that advances by ``step_s``.

    Both are kept as buckets of ``step_s`` (tumbling: ``step_s == size_s``). At time ``r`` the window is
    the last ``size_s / step_s`` buckets up to and including the one holding ``r``: for a tumbling window
    the window ``r`` falls in; for a sliding one, the hopping window ending at the next step boundary.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["tumbling", "sliding"]
    size_s: int
    step_s: int = 0

    @field_validator("size_s", "step_s", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_duration(value)

    @model_validator(mode="after")
    def _check(self) -> Window:
        if self.size_s <= 0:
            raise ValueError("a window needs size_s > 0")
        if self.kind == "tumbling":
            if self.step_s not in (0, self.size_s):
                raise ValueError("a tumbling window has no step_s (its step is its size)")
            self.step_s = self.size_s
        else:
            if self.step_s <= 0 or self.size_s % self.step_s:
                raise ValueError("a sliding window needs a step_s > 0 that divides size_s")
            if self.size_s // self.step_s > MAX_BUCKETS:
                raise ValueError(f"a sliding window has at most {MAX_BUCKETS} steps (size_s / step_s)")
        return self

    @property
    def step_ms(self) -> int:
        return self.step_s * 1000

    @property
    def buckets(self) -> int:
        return self.size_s // self.step_s


class Expectation(BaseModel):
    """The range a field's values are expected in (data quality: out-of-range rate)."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None


class Aggregation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    fn: AggFn
    field: str | None = None
    window: Window | None = None

    @field_validator("fn", mode="before")
    @classmethod
    def _fn_alias(cls, value: Any) -> Any:
        return "distinct_count" if value == "distinct-count" else value


class FeatureView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    stream: str = "*"
    entity: str = "entity_id"
    description: str = ""
    passthrough: list[str] | Literal["*"] = "*"
    ttl_s: int = 0
    allowed_lateness_s: int = 0
    aggregations: list[Aggregation] = Field(default_factory=list)
    expect: dict[str, Expectation] = Field(default_factory=dict)

    @field_validator("ttl_s", "allowed_lateness_s", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_duration(value)

    def applies_to(self, stream: str) -> bool:
        return fnmatch.fnmatchcase(stream, self.stream)


class Definitions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    views: list[FeatureView]
    digest: str = ""

    @classmethod
    def load(cls, path: Path) -> Definitions:
        return cls.parse(path.read_text(), str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<definitions>") -> Definitions:
        try:
            raw = yaml.safe_load(text) or {}
            defs = cls.model_validate(raw)
        except (yaml.YAMLError, ValidationError) as exc:
            raise InvalidArgument(f"feature definitions in {source} are invalid: {exc}", field="views") from exc
        defs._check()
        defs.digest = hashlib.sha256(text.encode()).hexdigest()
        return defs

    def _check(self) -> None:
        views: set[str] = set()
        aggs: set[str] = set()
        for view in self.views:
            if not _NAME.match(view.name) or ":" in view.name:
                raise InvalidArgument(f"view name {view.name!r} must be letters, digits, '_', '.', '-'", field="name")
            if view.name in views:
                raise InvalidArgument(f"two views are named {view.name!r}", field="name")
            views.add(view.name)
            for agg in view.aggregations:
                if not _NAME.match(agg.name) or ":" in agg.name:
                    raise InvalidArgument(f"aggregation name {agg.name!r} must be letters, digits, '_', '.', '-'",
                                          field="name")
                if agg.name in aggs:
                    raise InvalidArgument(f"two aggregations are named {agg.name!r}; names are global",
                                          field="name")
                aggs.add(agg.name)
                if agg.fn != "count" and not agg.field:
                    raise InvalidArgument(f"aggregation {agg.name} ({agg.fn}) needs a field", field="field")
            if isinstance(view.passthrough, list):
                clash = set(view.passthrough) & {a.name for a in view.aggregations}
                if clash:
                    raise InvalidArgument(f"view {view.name}: {sorted(clash)} are both passthrough fields and "
                                          "aggregations", field="passthrough")

    # -- lookups -----------------------------------------------------------------------------------------
    def views_for(self, stream: str) -> list[FeatureView]:
        cached = self._by_stream.get(stream)
        if cached is None:
            cached = self._by_stream[stream] = [v for v in self.views if v.applies_to(stream)]
        return cached

    @cached_property
    def _by_stream(self) -> dict[str, list[FeatureView]]:
        return {}

    @cached_property
    def views_by_name(self) -> dict[str, FeatureView]:
        return {v.name: v for v in self.views}

    @cached_property
    def aggregations(self) -> dict[str, tuple[FeatureView, Aggregation]]:
        """Aggregation name -> (its view, itself)."""
        return {a.name: (v, a) for v in self.views for a in v.aggregations}

    def key_ttl(self, stream: str) -> int:
        """How long an entity's online hash lives after an update from ``stream`` (0: forever)."""
        ttls = [v.ttl_s for v in self.views_for(stream)]
        return 0 if not ttls or 0 in ttls else max(ttls)

    def max_key_ttl(self) -> int:
        ttls = [v.ttl_s for v in self.views]
        return 0 if not ttls or 0 in ttls else max(ttls)
