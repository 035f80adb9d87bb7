"""The drift service's own settings (prefix ``MLOPS_DRIFT_``); ports come from ``service_settings``.

The detector is JSON, e.g. ``MLOPS_DRIFT_DETECTOR='{"type": "kswin", "alpha": 0.001}'``.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.drift.detectors import AdwinConfig, DetectorConfig


class DriftSettings(BaseSettings):
    """Which detector runs, how much history rebuilds it, and how alerts are kept."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_DRIFT_", extra="ignore")

    detector: DetectorConfig = Field(default_factory=AdwinConfig, description="Detector type and parameters.")
    concept_detection: bool = Field(
        True, description="Also run the detector on the error stream of labelled predictions (concept drift)."
    )
    rebuild_window: int = Field(
        2000, ge=0, description="Recent values kept per model version in Redis to rebuild a detector."
    )
    alert_cooldown_s: float = Field(
        60.0,
        ge=0,
        description=(
            "No second alert of the same kind for a model version whose triggering record's time is this close "
            "to the last one's: one shift fires the detector of every partition the stream is spread over."
        ),
    )
    max_alerts: int = Field(1000, gt=0, description="Alerts kept for GET /v1/alerts.")
