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
