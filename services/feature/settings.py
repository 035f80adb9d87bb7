"""Settings of the feature service (prefix ``MLOPS_FEATURE_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DEFINITIONS = Path(__file__).with_name("definitions.yaml")


class FeatureSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLOPS_FEATURE_", extra="ignore")

    definitions: Path = Field(DEFAULT_DEFINITIONS, description="The feature definitions file (YAML).")
    max_entities: int = Field(10_000, description="Most entities in one online read.")
    batch_records: int = Field(2000, description="Most records one consumer batch takes from events.validated.")
    offline_flush_s: float = Field(1.0, description="Longest a row waits in memory before its Parquet write.")
    offline_flush_rows: int = Field(50_000, description="Rows that trigger a Parquet write before the time is up.")
    offline_max_pending: int = Field(
        1_000_000, description="Rows that may wait for a failing Parquet write before the consumer stops."
    )
