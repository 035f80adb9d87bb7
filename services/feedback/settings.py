"""The feedback service's own settings (prefix ``MLOPS_FEEDBACK_``); ports come from ``service_settings``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DAY_S = 24 * 3600


class FeedbackSettings(BaseSettings):
    """How long predictions and early feedback wait for each other, and how often the sweep runs."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_FEEDBACK_", extra="ignore")

    prediction_ttl_s: int = Field(DAY_S, gt=0, description="How long a served prediction waits for its feedback.")
    feedback_ttl_s: int = Field(
        DAY_S, gt=0, description="How long feedback that arrived before its prediction is held, then dead-lettered."
    )
    claim_lease_s: float = Field(
        10.0, gt=0,
        description="Expired feedback claimed by a sweep but not yet dead-lettered is taken over after this.",
    )
    sweep_interval_s: float = Field(5.0, gt=0, description="How often held feedback past its TTL is swept.")
    sweep_batch: int = Field(500, gt=0, description="Most expired feedback dead-lettered per sweep round.")
    quality_refresh_s: float = Field(15.0, gt=0, description="How often the quality gauges are reloaded from Redis.")
    batch_records: int = Field(
        1000, gt=0, description="Most records of one partition joined as one batch (one Redis write, one send)."
    )
    max_batch: int = Field(10_000, gt=0, description="Most feedback items accepted in one request.")
