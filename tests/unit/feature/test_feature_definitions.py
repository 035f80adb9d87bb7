"""Feature definitions: loading, durations, windows, validation, stream globs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.errors import InvalidArgument
from services.feature.definitions import Definitions, Window, parse_duration
from services.feature.settings import DEFAULT_DEFINITIONS


def test_the_shipped_definitions_load() -> None:
    defs = Definitions.load(DEFAULT_DEFINITIONS)
    assert defs.views and len(defs.digest) == 64
    assert "amount_sum_1h" in defs.aggregations
    assert [v.name for v in defs.views_for("payments-eu")] == ["default", "payments"]
    assert [v.name for v in defs.views_for("clicks")] == ["default"]


@pytest.mark.parametrize(("text", "seconds"), [(90, 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("7d", 604800),
                                               ("2w", 1209600), ("1000ms", 1)])
def test_durations(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "1y", -5, "1.5h", True, "500ms"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_windows() -> None:
    tumbling = Window(kind="tumbling", size_s="1h")
    assert (tumbling.step_s, tumbling.buckets, tumbling.step_ms) == (3600, 1, 3_600_000)
    sliding = Window(kind="sliding", size_s="1h", step_s="10m")
    assert (sliding.step_s, sliding.buckets) == (600, 6)
    for bad in ({"kind": "sliding", "size_s": 3600}, {"kind": "sliding", "size_s": 3600, "step_s": 700},
                {"kind": "tumbling", "size_s": 3600, "step_s": 60}, {"kind": "tumbling", "size_s": 0},
                {"kind": "sliding", "size_s": "1d", "step_s": "1s"}):
        with pytest.raises(ValueError):
            Window.model_validate(bad)


def _defs(tmp_path: Path, text: str) -> Definitions:
    path = tmp_path / "defs.yaml"
    path.write_text(text)
    return Definitions.load(path)


def test_every_aggregation_and_the_distinct_count_alias(tmp_path: Path) -> None:
    defs = _defs(tmp_path, """
views:
  - name: loans
    stream: "loans*"
    passthrough: [income]
    ttl_s: 1h
    allowed_lateness_s: 5m
    expect: {income: {min: 0}}
    aggregations:
      - {name: n, fn: count}
      - {name: total, fn: sum, field: amount}
      - {name: avg, fn: mean, field: amount, window: {kind: sliding, size_s: 1h, step_s: 5m}}
      - {name: lo, fn: min, field: amount, window: {kind: tumbling, size_s: 1d}}
      - {name: hi, fn: max, field: amount}
      - {name: last_purpose, fn: last, field: purpose}
      - {name: purposes, fn: distinct-count, field: purpose}
""")
    view = defs.views[0]
    assert (view.ttl_s, view.allowed_lateness_s) == (3600, 300)
    assert defs.aggregations["purposes"][1].fn == "distinct_count"
    assert defs.views_for("loans-2") == [view] and defs.views_for("other") == []
    assert defs.key_ttl("loans") == 3600 and defs.key_ttl("other") == 0


@pytest.mark.parametrize("text", [
    "views:\n  - {name: v, aggregations: [{name: s, fn: sum}]}\n",                        # no field
    "views: [ {name: v, aggregations: [{name: m, fn: median, field: x}]} ]\n",           # unknown fn
    "views:\n  - {name: v, aggregations: [{name: a, fn: count}]}\n"
    "  - {name: w, aggregations: [{name: a, fn: count}]}\n",                                 # one name, two views
    "views:\n  - {name: v}\n  - {name: v}\n",                                               # two views, one name
    "views:\n  - {name: v, passthrough: [a], aggregations: [{name: a, fn: count}]}\n",   # feature named twice
    "views:\n  - {name: 'v:1'}\n",                                                          # ':' in a name
    "views:\n  - {name: v, colour: red}\n",                                                 # unknown key
    "views: [ {name: v,\n",                                                                 # not YAML
])
def test_bad_definitions_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(InvalidArgument):
        _defs(tmp_path, text)
