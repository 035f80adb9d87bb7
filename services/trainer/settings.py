"""The trainer's own settings (prefix ``MLOPS_TRAINER_``), beside the platform's shared ones."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainerSettings(BaseSettings):
    """Training defaults and limits."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_TRAINER_", extra="ignore")

    default_epochs: int = Field(30, description="Epochs when a request does not say.")
    max_epochs: int = Field(1000, description="Largest epoch count a request may ask for.")
    default_seed: int = Field(0, description="Seed for requests from `training.requests` (which carry none).")
    hidden: int = Field(32, description="Width of the MLP's two hidden layers.")
    learning_rate: float = Field(0.01, description="Adam learning rate.")
    batch_size: int = Field(128, description="Minibatch size.")
    holdout_fraction: float = Field(0.2, description="Share of rows held out to measure accuracy.")
    max_classes: int = Field(1000, description="Largest class id + 1 a label column may hold.")
    clip: float = Field(100.0, description="Standardised inputs are clipped to +-clip (out-of-range stays valid).")
    concurrency: int = Field(1, description="Jobs trained at once (training is CPU/GPU bound).")
    processes: int = Field(1, description="Data-parallel processes per job (torchrun; gloo on CPU, nccl on GPU).")
    max_processes: int = Field(8, description="Most data-parallel processes a job may ask for.")
    holdout_tolerance: float = Field(
        0.02,
        description="Holdout gate: how far below production's accuracy on the same holdout a candidate may be "
        "(the gate turns away clearly worse models; live traffic, through the bandit, decides among the rest).",
    )
    fairness_max_gap: float = Field(
        0.1, description="Fairness gate: largest metric gap across the sensitive attribute's groups."
    )
    fairness_metric: str = Field("accuracy", description="Fairness gate metric: accuracy or positive_rate.")
    fairness_min_group_rows: int = Field(10, description="Fairness gate: holdout rows a group needs to count.")
    metrics_flush_s: float = Field(0.5, description="How often epoch metrics are sent to the registry.")
    rpc_timeout_s: float = Field(300.0, description="Deadline of each call to the feature and registry services.")
    rpc_attempts: int = Field(4, description="Attempts per call while the peer is unavailable.")
