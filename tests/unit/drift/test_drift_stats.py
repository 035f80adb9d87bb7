"""The two-sample statistics against scipy's reference implementations, and the reference parser."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from mlops.bench import drift_streams as ds
from services.drift import stats
from services.drift.reference import OTHER, BadReference, category_key, parse


def test_ks_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    for shift in (0.0, 0.1, 0.3):
        a, b = rng.normal(shift, 1, 500), rng.normal(0, 1, 1000)
        d, p = stats.ks_2samp(a, np.sort(b))
        ref = sps.ks_2samp(a, b, method="asymp")
        assert d == pytest.approx(ref.statistic)
        assert p == pytest.approx(ref.pvalue, rel=0.15, abs=1e-6)
    d, p = stats.ks_2samp(np.array([np.nan, 1.0, 2.0]), np.sort(np.array([1.0, 2.0])))
    assert d == 0.0 and p == 1.0, "non-finite live values are ignored; ties handled exactly"
    assert stats.ks_2samp(np.array([]), np.array([1.0])) == (0.0, 1.0)


def test_chi2_matches_scipy() -> None:
    live, ref = np.array([30, 50, 20, 0]), np.array([300, 400, 300, 0])
    stat, p = stats.chi2_2samp(live, ref)
    expected = sps.chi2_contingency(np.vstack((live[:3], ref[:3])), correction=False)
    assert stat == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
    assert stats.chi2_2samp(np.array([5, 0]), np.array([7, 0])) == (0.0, 1.0)


def test_psi_is_zero_for_equal_shapes_and_grows_with_a_shift() -> None:
    assert stats.psi(np.array([10, 20, 30]), np.array([100, 200, 300])) == pytest.approx(0.0, abs=1e-3)
    assert stats.psi(np.array([30, 20, 10]), np.array([10, 20, 30])) > 0.5
    edges = np.array([0.0, 1.0, 1.0, 2.0])  # repeated edges (ties in training deciles) are fine
    assert stats.histogram(np.array([-1.0, 0.5, 1.0, 2.0, 3.0, np.nan]), edges).tolist() == [1, 1, 0, 2, 1]


def test_corrections_match_their_definitions() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    assert stats.adjust(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert stats.adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.adjust(p, "none") == p and stats.adjust([], "bh") == []
    assert max(stats.adjust([0.9, 0.95], "holm")) == 1.0


def test_parse_the_trainers_format() -> None:
    rows = ds.feature_rows(2000, n_features=2)
    doc = ds.reference_for(rows, rows[:, 0])
    doc["features"]["city"] = {"kind": "categorical", "counts": {"3": 5, "3.0": 2, "7": 1, "<missing>": 4}}
    doc["features"]["empty"] = {"kind": "numeric", "edges": [], "counts": [], "sample": []}
    ref = parse(json.dumps(doc).encode())
    assert ref.rows == 2000 and set(ref.features) == {"f00", "f01", "city"}
    num = ref.features["f00"]
    assert num.counts.size == 12 and num.counts[0] == 0 and num.counts[-1] == 0 and num.sample.size == 1000
    assert ref.prediction is not None and ref.prediction.minimum == rows[:, 0].min()
    city = ref.features["city"]
    assert city.categories == ("3", "7", "<missing>", OTHER) and city.counts.tolist() == [7, 1, 4, 0]  # type: ignore[union-attr]
    assert city.index(3.0) == 0 and city.index(float("nan")) == 2 and city.index(9.0) == 3  # type: ignore[union-attr]
    assert category_key(2.5) == "2.5" and category_key(4.0) == "4"
    assert len(ref.sha256) == 64 and ref.summary()["features"]["city"]["categories"] == 3


@pytest.mark.parametrize("doc", [
    b"not json", b"[]", b'{"features": {"x": {"kind": "numeric", "edges": [1, 0], "counts": [1]}}}',
    b'{"features": {"x": {"kind": "numeric", "edges": [0, 1], "counts": [1, 2]}}}',
    b'{"features": {"x": {"kind": "categorical", "counts": []}}}', b'{"features": {"x": 3}}',
])
def test_malformed_references_are_rejected(doc: bytes) -> None:
    with pytest.raises(BadReference):
        parse(doc)
