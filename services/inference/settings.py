"""Settings of the inference service (prefix ``MLOPS_INFERENCE_``); ports come from mlops.settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class InferenceSettings(BaseSettings):
    """Batching, device and model-repository behaviour."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_INFERENCE_", extra="ignore")

    max_batch_size: int = Field(64, description="Most rows the dynamic batcher merges into one forward pass.")
    max_queue_delay_us: int = Field(
        2000, description="Longest a batch waits for more requests after its first one, in microseconds."
    )
    adaptive_batching: bool = Field(
        True,
        description="Wait max_queue_delay_us only when the previous batch merged several requests, so a "
        "lone sequential client pays no queue delay.",
    )
    device: str = Field("auto", description="torch device: auto (cuda when available, else cpu), cpu, cuda:0...")
    serving_stages: tuple[str, ...] = Field(
        ("production", "canary", "shadow", "candidate"), description="Registry stages whose versions are loaded."
    )
    resync_interval_s: float = Field(
        30.0, description="Safety-net resync with the registry, besides the models.lifecycle events."
    )
    registry_timeout_s: float = Field(30.0, description="Deadline of one registry call (artifacts included).")
    warmup_rows: tuple[int, ...] = Field((1, 8, 64), description="Batch sizes run once before a version serves.")
