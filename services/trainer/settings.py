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
    concurrency: int = Field(1, description="Jobs trained at once (training is CPU/GPU bound).")
    rpc_timeout_s: float = Field(300.0, description="Deadline of each call to the feature and registry services.")
    rpc_attempts: int = Field(4, description="Attempts per call while the peer is unavailable.")
