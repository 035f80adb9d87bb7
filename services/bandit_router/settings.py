"""Settings of the bandit router (prefix ``MLOPS_BANDIT_ROUTER_``); ports come from mlops.settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    """Caching, peer deadlines, reward bookkeeping and the experiment loop."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_BANDIT_ROUTER_", extra="ignore")

    spec_cache_ttl_s: float = Field(
        1.0, description="How long a process reuses an endpoint spec read from Redis (PUTs here apply at once)."
    )
    alias_cache_ttl_s: float = Field(2.0, description="How long a resolved alias (e.g. production) is reused.")
    stats_cache_ttl_s: float = Field(
        0.05,
        description="How long a process decides from the variant statistics it last read from Redis (its own "
        "decisions are added to them meanwhile). Rewards take seconds to come back, so 50 ms of staleness changes "
        "no decision's quality and saves a Redis round trip on most requests under load. 0: read every request.",
    )
    await_publish: bool = Field(
        False,
        description="Answer predict only after the broker acknowledged the Prediction record (+~1 ms p50 and a "
        "long tail on a busy broker). Off (default): the record is sent in the background, right after the "
        "answer; a graceful stop drains it, and only a crash (kill -9) within that millisecond can lose it "
        "(its feedback is then dead-lettered as unmatched). The decision itself is in Redis before the answer.",
    )
    inference_timeout_s: float = Field(5.0, description="Deadline of one ModelInfer call.")
    feature_timeout_s: float = Field(2.0, description="Deadline of one online feature read.")
    registry_timeout_s: float = Field(5.0, description="Deadline of one registry call.")
    reward_timeout_s: float = Field(
        3600.0,
        description="How long a decision waits for its reward before it is settled as expired (an endpoint's "
        "policy.params.reward_timeout_s overrides it). Pending decisions cost ~150 bytes of Redis each.",
    )
    evaluate_interval_s: float = Field(
        1.0, description="How often each router process checks canary guardrails, promotions and overdue rewards."
    )
    shadow_max_inflight: int = Field(
        256, description="Mirrored requests in flight per process; beyond it, mirrors are dropped (and counted)."
    )
    lock_ttl_s: float = Field(30.0, description="Lease of a promotion or rollback, so one replica acts at a time.")
    lifecycle_group: str = Field(
        "bandit-router.lifecycle",
        description="Consumer group of models.lifecycle: one group for all replicas (each event is handled once; "
        "the endpoint change is idempotent in Redis).",
    )
