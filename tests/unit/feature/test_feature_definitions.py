"""Feature definitions: loading, and the operations one event applies to the online store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops.errors import InvalidArgument
from services.feature.definitions import Definitions, max_ttl, operations
from services.feature.settings import DEFAULT_DEFINITIONS


def test_the_shipped_definitions_load() -> None:
    defs = Definitions.load(DEFAULT_DEFINITIONS)
    assert defs.views and len(defs.digest) == 64


def _defs(tmp_path: Path, text: str) -> Definitions:
    path = tmp_path / "defs.yaml"
    path.write_text(text)
    return Definitions.load(path)


def test_operations_cover_every_aggregation(tmp_path: Path) -> None:
    defs = _defs(tmp_path, """
views:
  - name: loans
    stream: loans
    passthrough: [income]
    ttl_s: 60
    aggregations:
      - {name: n, fn: count}
      - {name: total, fn: sum, field: amount}
      - {name: avg, fn: mean, field: amount}
      - {name: lo, fn: min, field: amount}
      - {name: hi, fn: max, field: amount}
      - {name: last_purpose, fn: last, field: purpose}
""")
    ops = operations(defs, "loans", {"income": 5.0, "amount": 2.5, "purpose": "car", "ignored": 1})
    assert ("last", "income", "5.0") in ops
    assert ("incr", "n", "1") in ops
    assert ("incr", "total", "2.5") in ops
    assert ("incr", "avg__sum", "2.5") in ops and ("incr", "avg__n", "1") in ops
    assert ("min", "lo", "2.5") in ops and ("max", "hi", "2.5") in ops
    assert ("last", "last_purpose", json.dumps("car")) in ops
    assert not any(op[1] == "ignored" for op in ops)
    assert operations(defs, "other", {"income": 1.0}) == []
    assert max_ttl(defs, "loans") == 60


def test_aggregation_without_field_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="needs a field"):
        _defs(tmp_path, "views:\n  - {name: v, aggregations: [{name: s, fn: sum}]}\n")


def test_bad_yaml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        _defs(tmp_path, "views: [ {name: v, aggregations: [{fn: median}]} ]\n")
