"""The drift service's own settings (prefix ``MLOPS_DRIFT_``); ports come from ``service_settings``.

Nested settings are JSON, e.g. ``MLOPS_DRIFT_DETECTOR='{"type": "kswin", "alpha": 0.001}'`` or
``MLOPS_DRIFT_DATA='{"window": 1000, "correction": "holm"}'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.drift import detectors
from services.drift.datadrift import DataDriftConfig
from services.drift.detectors import AdwinConfig, DetectorConfig
from services.drift.sequential import SequentialConfig

DEFAULT_POLICY = Path(__file__).resolve().parent / "retraining.yaml"


class DeadLetterConfig(BaseModel):
    """The dead-letter rate check on ``events.deadletter``, per source topic."""

    model_config = ConfigDict(extra="forbid")
    window_s: float = Field(300.0, gt=0, description="Time window the rate is measured over.")
    max_per_minute: float = Field(10.0, gt=0, description="Dead letters per minute above which it is an issue.")


class DriftSettings(BaseSettings):
    """Which detectors run and how, how history rebuilds them, how alerts are kept and what retrains."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_DRIFT_", extra="ignore")

    detector: DetectorConfig = Field(
        default_factory=AdwinConfig,
        description=(
            "Detector (adwin, page_hinkley, kswin) on the score and the loss; parameters left unset take the "
            "detector's defaults for each signal (services.drift.detectors.SIGNAL_DEFAULTS)."
        ),
    )
    prediction: SequentialConfig = Field(
        default_factory=lambda: SequentialConfig(min_effect=0.05, direction="both"),
        description="How detector firings on the positive-class score become prediction-drift alerts.",
    )
    concept: SequentialConfig = Field(
        default_factory=lambda: SequentialConfig(min_effect=0.1, direction="up"),
        description="How detector firings on the per-example loss become concept-drift alerts (rises only).",
    )
    concept_detection: bool = Field(True, description="Run the detector on the loss of labelled predictions.")
    concept_loss: Literal["log_loss", "zero_one"] = Field(
        "log_loss",
        description="Per-example loss watched for concept drift: log loss (P(label) clipped at 1e-3) or 0/1 error.",
    )
    data: DataDriftConfig = Field(default_factory=DataDriftConfig, description="Window checks against the reference.")
    dead_letters: DeadLetterConfig = Field(default_factory=DeadLetterConfig, description="Dead-letter rate check.")
    reference_retry_s: float = Field(30.0, gt=0, description="How often a version without a reference asks again.")
    registry_timeout_s: float = Field(5.0, gt=0, description="Deadline of gRPC calls to the registry and feedback.")
    rebuild_window: int = Field(
        2000, ge=0, description="Recent values kept per model version and partition in Redis to rebuild a detector."
    )
    state_every: int = Field(100, gt=0, description="Values between writes of a detector's state to Redis.")
    alert_cooldown_s: float = Field(
        60.0,
        ge=0,
        description=(
            "No second alert of the same kind for a model version whose triggering record's time is this close "
            "to the last one's: one shift fires the detector of every partition the stream is spread over."
        ),
    )
    max_alerts: int = Field(1000, gt=0, description="Alerts kept for GET /v1/alerts.")
    retraining_policy: Path = Field(DEFAULT_POLICY, description="The retraining policy file (YAML).")
    tick_s: float = Field(2.0, gt=0, description="How often the schedule, quality and dead-letter checks run.")

    @model_validator(mode="after")
    def _detector_suits_its_signals(self) -> DriftSettings:
        """A detector that could never fire on a signal it is given is refused, with what to use instead."""
        watched: list[tuple[detectors.Signal, SequentialConfig]] = [("score", self.prediction)]
        if self.concept_detection:
            watched.append((self.concept_loss, self.concept))
        for signal, discipline in watched:
            why = detectors.refusal(self.detector, signal, discipline.min_effect)
            if why is not None:
                raise ValueError(why)
        return self

    def detector_for(self, signal: detectors.Signal) -> DetectorConfig:
        """The detector's parameters on ``signal``: the configured ones, the signal's defaults for the rest."""
        return detectors.for_signal(self.detector, signal)
