"""Settings of the bandit router (prefix ``MLOPS_BANDIT_ROUTER_``); ports come from mlops.settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    """Caching and peer deadlines."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_BANDIT_ROUTER_", extra="ignore")

    spec_cache_ttl_s: float = Field(
        1.0, description="How long a process reuses an endpoint spec read from Redis (PUTs here apply at once)."
    )
    alias_cache_ttl_s: float = Field(2.0, description="How long a resolved alias (e.g. production) is reused.")
    await_publish: bool = Field(
        True,
        description="Answer predict only after the broker acknowledged the Prediction record. Off: publish in "
        "the background (lower latency; a crash can lose records not yet acknowledged).",
    )
    inference_timeout_s: float = Field(5.0, description="Deadline of one ModelInfer call.")
    feature_timeout_s: float = Field(2.0, description="Deadline of one online feature read.")
    registry_timeout_s: float = Field(5.0, description="Deadline of one registry call.")
