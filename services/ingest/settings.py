"""Settings of the ingest service (prefix ``MLOPS_INGEST_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLOPS_INGEST_", extra="ignore")

    max_batch: int = Field(10_000, description="Most events in one REST/gRPC request.")
    max_body_bytes: int = Field(16 * 1024 * 1024, description="Largest REST request body.")
    dedup_window_s: int = Field(24 * 3600, description="A repeated event_id within this window is dropped.")
    batch_records: int = Field(2000, description="Most records one consumer batch takes from events.raw.")
