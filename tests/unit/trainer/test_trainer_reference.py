"""Reference distributions: the format the drift service reads, deterministic and canonical."""

from __future__ import annotations

import json

import numpy as np

from services.trainer import reference


def test_numeric_features_get_deciles_counts_sample_and_moments() -> None:
    values = np.arange(2000, dtype=np.float64)
    values[::100] = np.nan
    doc = reference.build({"x": values, "city": np.array(["a", "b", "a", None], dtype=object)},
                          np.linspace(0, 1, 2000), rows=2000)
    x = doc["features"]["x"]
    assert x["kind"] == "numeric" and len(x["edges"]) == 11 and len(x["counts"]) == 10
    assert x["edges"][0] == x["min"] == 1.0 and x["edges"][-1] == x["max"] == 1999.0
    assert sum(x["counts"]) == 1980 and x["missing"] == 20 and max(x["counts"]) - min(x["counts"]) <= 2
    assert len(x["sample"]) == 1000 and len(set(x["sample"])) == 1000
    assert abs(x["mean"] - np.nanmean(values)) < 1e-9 and abs(x["std"] - np.nanstd(values)) < 1e-9
    assert doc["features"]["city"] == {"kind": "categorical", "counts": {"<missing>": 1, "a": 2, "b": 1}}
    assert doc["prediction"]["kind"] == "numeric" and len(doc["prediction"]["edges"]) == 11
    assert doc["rows"] == 2000


def test_ties_and_constants_keep_every_value_in_one_bin() -> None:
    binary = reference.numeric(np.array([0.0] * 90 + [1.0] * 10))
    assert sum(binary["counts"]) == 100 and binary["edges"][0] == 0.0 and binary["edges"][-1] == 1.0
    constant = reference.numeric(np.full(5, 3.0))
    assert sum(constant["counts"]) == 5 and constant["std"] == 0.0
    empty = reference.numeric(np.array([np.nan, np.inf]))
    assert empty["edges"] == [] and empty["missing"] == 2


def test_same_data_same_bytes() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=5000)
    a = reference.dumps(reference.build({"x": x}, x, 5000))
    b = reference.dumps(reference.build({"x": x.copy()}, x.copy(), 5000))
    assert a == b and json.loads(a)["features"]["x"]["counts"] == json.loads(b)["features"]["x"]["counts"]
