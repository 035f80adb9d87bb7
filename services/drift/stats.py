"""Two-sample statistics for data drift: PSI, Kolmogorov-Smirnov, chi-squared, and the multiple-testing
corrections applied across a model version's features. Pure numpy/scipy, no I/O.

PSI is the effect size (how far the live distribution moved); the KS / chi-squared p-value says whether
that move is more than sampling noise. An alert needs both: a p-value alone flags negligible moves once
windows are large, which is the false-alarm complaint about batch drift tools.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import special

#: Additive smoothing of bin counts, so that an empty bin on either side gives a finite PSI.
SMOOTHING = 0.5

Correction = Literal["bh", "holm", "none"]


def psi(live_counts: np.ndarray, ref_counts: np.ndarray) -> float:
    """Population stability index of two histograms over the same bins (counts, smoothed)."""
    live = np.asarray(live_counts, dtype=np.float64) + SMOOTHING
    ref = np.asarray(ref_counts, dtype=np.float64) + SMOOTHING
    p, q = live / live.sum(), ref / ref.sum()
    return float(np.sum((p - q) * np.log(p / q)))


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in ``[-inf, e0) + the reference bins + (e_last, inf]``.

    The reference bins follow ``np.histogram``'s convention (left-closed, the last closed on both ends),
    as the trainer counted them; values outside the training range land in the two outer bins, which the
    reference holds empty.
    """
    v = values[np.isfinite(values)]
    inner, _ = np.histogram(v, bins=edges)
    below = int(np.count_nonzero(v < edges[0]))
    above = int(np.count_nonzero(v > edges[-1]))
    return np.concatenate(([below], inner, [above]))


def ks_2samp(live: np.ndarray, ref_sorted: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic and its asymptotic p-value (Stephens' small-sample correction).

    ``ref_sorted`` must be sorted; non-finite live values are ignored. Ties are handled exactly (the
    statistic is taken over every pooled point with right-continuous CDFs); the p-value is then conservative.
    """
    x = np.sort(live[np.isfinite(live)])
    n, m = x.size, ref_sorted.size
    if n == 0 or m == 0:
        return 0.0, 1.0
    pooled = np.concatenate((x, ref_sorted))
    cdf_x = np.searchsorted(x, pooled, side="right") / n
    cdf_r = np.searchsorted(ref_sorted, pooled, side="right") / m
    d = float(np.max(np.abs(cdf_x - cdf_r)))
    en = math.sqrt(n * m / (n + m))
    p = float(special.kolmogorov((en + 0.12 + 0.11 / en) * d))
    return d, min(1.0, max(0.0, p))


def chi2_2samp(live_counts: np.ndarray, ref_counts: np.ndarray) -> tuple[float, float]:
    """Chi-squared test of homogeneity of two category-count vectors (a 2 x k contingency table).

    Categories empty on both sides are dropped; with fewer than two left there is nothing to test.
    """
    live = np.asarray(live_counts, dtype=np.float64)
    ref = np.asarray(ref_counts, dtype=np.float64)
    keep = (live + ref) > 0
    live, ref = live[keep], ref[keep]
    if live.size < 2 or live.sum() == 0 or ref.sum() == 0:
        return 0.0, 1.0
    table = np.vstack((live, ref))
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    return stat, float(special.chdtrc(live.size - 1, stat))


def adjust(p_values: list[float], method: Correction) -> list[float]:
    """p-values adjusted for testing many features at once (Benjamini-Hochberg or Holm), input order kept."""
    m = len(p_values)
    if m == 0 or method == "none":
        return list(p_values)
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    ranked = p[order]
    if method == "bh":
        # q_(i) = min over j >= i of p_(j) * m / j
        scaled = ranked * m / np.arange(1, m + 1)
        adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    else:  # holm: q_(i) = max over j <= i of p_(j) * (m - j + 1)
        scaled = ranked * (m - np.arange(m))
        adjusted = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return [float(x) for x in out]
