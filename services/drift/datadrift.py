"""Window checks against the reference distributions: data drift per feature (PSI plus KS for numeric or
chi-squared for categorical features, corrected across features), prediction drift of the score against
the training scores, and data quality (missing and out-of-range rates). Pure: rows in, scores out.

A feature drifts when its corrected p-value is below ``alpha`` *and* its PSI reaches ``psi_alert``; it
stops drifting when its PSI falls below ``psi_clear``. :class:`Hysteresis` turns those per-evaluation
verdicts into one alert per episode: an alert when the first feature starts drifting, none while the
episode lasts (other features joining are listed in the scores, not alerted again), and the episode ends
only after ``clear_evaluations`` evaluations in a row with nothing drifting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from services.drift import stats
from services.drift.reference import CategoricalRef, NumericRef, Reference


class DataDriftConfig(BaseModel):
    """Sliding windows of predictions compared with the training data's reference distributions."""

    model_config = ConfigDict(extra="forbid")
    window: int = Field(500, gt=1, description="Most recent predictions compared with the reference.")
    min_window: int = Field(200, gt=1, description="Predictions needed before the first evaluation.")
    step: int = Field(100, gt=0, description="Predictions between evaluations (the window slides by this).")
    alpha: float = Field(0.01, gt=0, lt=1, description="Significance after the correction across features.")
    correction: stats.Correction = Field("bh", description="bh (Benjamini-Hochberg), holm, or none.")
    psi_alert: float = Field(0.2, ge=0, description="PSI a feature must reach (beside significance) to drift.")
    psi_clear: float = Field(0.1, ge=0, description="PSI below which a drifting feature is calm again.")
    clear_evaluations: int = Field(3, gt=0, description="Calm evaluations in a row that end a drift episode.")
    max_missing_rate: float = Field(0.05, ge=0, le=1, description="Missing values above this are a quality issue.")
    max_out_of_range_rate: float = Field(
        0.05, ge=0, le=1, description="Values outside the training range (or unseen categories) above this."
    )


@dataclass(frozen=True, slots=True)
class Row:
    """One prediction in the window: its features, positive-class score and record time."""

    features: dict[str, float]
    score: float | None
    time: float


@dataclass(slots=True)
class FeatureScore:
    name: str
    kind: str
    n: int
    psi: float
    test: str  # ks | chi2
    statistic: float
    p_value: float
    p_adjusted: float
    missing_rate: float
    out_of_range_rate: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass(slots=True)
class Evaluation:
    n: int
    first_time: float
    last_time: float
    reference_sha256: str
    reference_rows: int
    correction: str
    features: dict[str, FeatureScore] = field(default_factory=dict)
    prediction: FeatureScore | None = None

    def window(self) -> dict[str, Any]:
        return {"size": self.n, "from": self.first_time, "to": self.last_time}

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window(),
            "reference": {"sha256": self.reference_sha256, "rows": self.reference_rows},
            "correction": self.correction,
            "features": {k: v.to_dict() for k, v in self.features.items()},
            "prediction": self.prediction.to_dict() if self.prediction else None,
        }


def _column(rows: Sequence[Row], name: str) -> np.ndarray:
    return np.fromiter((r.features.get(name, math.nan) for r in rows), dtype=np.float64, count=len(rows))


def _numeric(name: str, values: np.ndarray, ref: NumericRef) -> FeatureScore:
    finite = values[np.isfinite(values)]
    n = values.size
    missing = (n - finite.size) / n if n else 0.0
    out = np.count_nonzero((finite < ref.minimum) | (finite > ref.maximum)) / n if n else 0.0
    psi = stats.psi(stats.histogram(finite, ref.edges), ref.counts) if finite.size else 0.0
    d, p = stats.ks_2samp(finite, ref.sample)
    return FeatureScore(name, "numeric", int(finite.size), psi, "ks", d, p, p, missing, float(out))


def _categorical(name: str, values: np.ndarray, ref: CategoricalRef) -> FeatureScore:
    n = values.size
    finite = values[np.isfinite(values)]
    counts = np.zeros(len(ref.categories))
    for v in finite:
        counts[ref.index(float(v))] += 1
    missing = (n - finite.size) / n if n else 0.0
    unseen = counts[-1] / n if n else 0.0
    psi = stats.psi(counts, ref.counts) if finite.size else 0.0
    chi, p = stats.chi2_2samp(counts, ref.counts)
    return FeatureScore(name, "categorical", int(finite.size), psi, "chi2", chi, p, p, missing, float(unseen))


def evaluate(rows: Sequence[Row], reference: Reference, correction: stats.Correction) -> Evaluation:
    """Every reference feature (and the score) of the window against the reference."""
    ev = Evaluation(
        n=len(rows),
        first_time=rows[0].time if rows else 0.0,
        last_time=rows[-1].time if rows else 0.0,
        reference_sha256=reference.sha256,
        reference_rows=reference.rows,
        correction=correction,
    )
    for name, ref in reference.features.items():
        values = _column(rows, name)
        ev.features[name] = _numeric(name, values, ref) if isinstance(ref, NumericRef) else _categorical(
            name, values, ref
        )
    names = list(ev.features)
    for name, q in zip(names, stats.adjust([ev.features[n].p_value for n in names], correction), strict=True):
        ev.features[name].p_adjusted = q
    if reference.prediction is not None:
        scores = np.fromiter((math.nan if r.score is None else r.score for r in rows), dtype=np.float64,
                             count=len(rows))
        ev.prediction = _numeric("prediction", scores, reference.prediction)
    return ev


@dataclass(slots=True)
class Hysteresis:
    """One check's episode state: which names are active, whether an episode is open, calm evaluations."""

    active: set[str] = field(default_factory=set)
    drifting: bool = False
    calm: int = 0

    def step(self, entering: set[str], staying: set[str], clear_evaluations: int) -> set[str] | None:
        """Apply one evaluation; returns the names that open a new episode (alert on them), else None."""
        self.active = (self.active & staying) | entering
        if not self.drifting:
            if entering:
                self.drifting, self.calm = True, 0
                return set(entering)
            return None
        if self.active:
            self.calm = 0
        else:
            self.calm += 1
            if self.calm >= clear_evaluations:
                self.drifting, self.calm = False, 0
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"active": sorted(self.active), "drifting": self.drifting, "calm": self.calm}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Hysteresis:
        if not d:
            return cls()
        return cls(set(d.get("active") or ()), bool(d.get("drifting")), int(d.get("calm") or 0))


def data_verdicts(ev: Evaluation, config: DataDriftConfig) -> tuple[set[str], set[str]]:
    """(features entering drift, features still above the clear level)."""
    entering = {n for n, f in ev.features.items() if f.p_adjusted < config.alpha and f.psi >= config.psi_alert}
    staying = {n for n, f in ev.features.items() if f.psi >= config.psi_clear}
    return entering, staying


def prediction_verdicts(ev: Evaluation, config: DataDriftConfig) -> tuple[set[str], set[str]]:
    p = ev.prediction
    if p is None:
        return set(), set()
    entering = {"prediction"} if p.p_value < config.alpha and p.psi >= config.psi_alert else set()
    return entering, ({"prediction"} if p.psi >= config.psi_clear else set())


def quality_verdicts(ev: Evaluation, config: DataDriftConfig) -> tuple[set[str], set[str]]:
    """Issues ``missing:<feature>`` / ``out_of_range:<feature>``; they clear below half their threshold."""
    entering: set[str] = set()
    staying: set[str] = set()
    for name, f in ev.features.items():
        for issue, rate, limit in (
            ("missing", f.missing_rate, config.max_missing_rate),
            ("out_of_range", f.out_of_range_rate, config.max_out_of_range_rate),
        ):
            if rate > limit:
                entering.add(f"{issue}:{name}")
            if rate > limit / 2:
                staying.add(f"{issue}:{name}")
    return entering, staying
