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
    cache_refresh_grace_s: float = Field(
        1.0,
        description="For how long past its TTL a cached spec or statistics snapshot may still be decided from "
        "while one background read refreshes it (so no request waits for that read). The refresh normally "
        "lands within a millisecond; the grace only matters when Redis is slow or down, after which requests "
        "read for themselves again.",
    )
    await_publish: bool = Field(
        False,
        description="Answer predict only after the broker acknowledged its Prediction record (+~1 ms p50 and a "
        "long tail on a busy broker). Off (default): the record waits in the outbox (below) and is sent within "
        "publish_linger_s after the answer; nothing is dropped while the process runs, a graceful stop sends "
        "everything, and only a crash (kill -9) loses the records of its last few milliseconds (their "
        "decisions are in Redis before the answer, so they expire without a reward).",
    )
    publish_linger_s: float = Field(
        0.005,
        description="How long a Prediction record waits in the outbox for others to go out with it. Sending one "
        "at a time, right after each answer, put its CPU on the next request's path.",
    )
    publish_max_records: int = Field(
        10_000,
        description="Predictions the outbox may hold unacknowledged; beyond it, predict waits (up to the "
        "inference timeout) and then answers 503 rather than answering without its record.",
    )
    publish_journal: bool = Field(
        True,
        description="Append each Prediction record to a local write-ahead journal (MLOPS_HOME/journal/"
        "bandit-router) before answering, so a crash of this process (kill -9) loses no answered prediction: "
        "the restarted process, or a replica sharing the directory, republishes what the broker never "
        "acknowledged. Costs one file write per prediction. Off: a crash loses the last publish_linger_s.",
    )
    journal_sweep_s: float = Field(
        5.0, description="How often a process looks for journals left by stopped processes and republishes them."
    )
    publish_drain_timeout_s: float = Field(
        10.0, description="How long a graceful stop waits for the outbox's records to be acknowledged."
    )
    latency_flush_s: float = Field(
        0.1,
        description="How often a process adds the inference latencies it measured to the shared histogram in "
        "Redis (one step for all; the canary guardrails read it every evaluate_interval_s).",
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
