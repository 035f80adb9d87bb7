"""Settings of the inference service (prefix ``MLOPS_INFERENCE_``); ports come from mlops.settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Batching(BaseModel):
    """Dynamic batching of one model version."""

    max_batch_size: int = Field(256, ge=1, description="Most rows merged into one forward pass.")
    max_queue_delay_us: int = Field(
        2000, ge=0, description="Longest a batch waits for more requests after its first one, in microseconds."
    )
    adaptive: bool = Field(
        True,
        description="Wait max_queue_delay_us only when the previous batch merged several requests, so a lone "
        "sequential client pays no queue delay.",
    )
    max_queue_rows: int = Field(
        65536,
        ge=1,
        description="Rows that may wait in the queue; beyond it requests are refused with RESOURCE_EXHAUSTED / 429.",
    )


class BatchingOverride(BaseModel):
    """Per-model batching settings; unset fields keep the service-wide value."""

    max_batch_size: int | None = Field(None, ge=1)
    max_queue_delay_us: int | None = Field(None, ge=0)
    adaptive: bool | None = None
    max_queue_rows: int | None = Field(None, ge=1)


class InferenceSettings(BaseSettings):
    """Batching, device, model source and prediction log."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_INFERENCE_", extra="ignore")

    max_batch_size: int = Field(
        256, ge=1, description="Most rows the dynamic batcher merges into one forward pass (rows, not requests)."
    )
    max_queue_delay_us: int = Field(
        2000, ge=0, description="Longest a batch waits for more requests after its first one, in microseconds."
    )
    adaptive_batching: bool = Field(
        True,
        description="Wait max_queue_delay_us only when the previous batch merged several requests, so a "
        "lone sequential client pays no queue delay.",
    )
    max_queue_rows: int = Field(
        65536, ge=1, description="Rows that may wait per model version; beyond: RESOURCE_EXHAUSTED / HTTP 429."
    )
    models: dict[str, BatchingOverride] = Field(
        default_factory=dict,
        description='Per-model batching, JSON: {"<model>": {"max_batch_size": 128, "max_queue_delay_us": 500}}.',
    )
    device: str = Field("auto", description="torch device: auto (cuda when available, else cpu), cpu, cuda:0...")
    forward_executor: Literal["auto", "thread", "inline"] = Field(
        "auto",
        description="Where forward passes run: `thread` (each version's own thread, off the event loop), `inline` "
        "(on the event loop: no thread hand-off) or `auto`: inline for a CPU model whose passes average under "
        "inline_max_us, else the thread (always the thread on CUDA and with the Triton backend).",
    )
    inline_max_us: int = Field(
        1000, ge=0, description="`auto`: longest average forward pass, in microseconds, still run on the event loop."
    )
    gil_switch_interval_us: int = Field(
        200,
        ge=0,
        description="Python's GIL switch interval for the process (0: Python's default, 5000). A forward thread "
        "waiting for the GIL gets it within this long instead of waiting for the busy event loop.",
    )
    uvloop: bool = Field(True, description="Run the service's event loop on uvloop (when installed).")
    optimize: bool = Field(
        True, description="Freeze TorchScript modules (and optimize_for_inference on CPU) when outputs stay equal."
    )
    torch_threads: int = Field(0, ge=0, description="torch intra-op threads for the forward pass; 0: torch's default.")
    serving_stages: tuple[str, ...] = Field(
        ("production", "canary", "shadow", "candidate"), description="Registry stages whose versions are loaded."
    )
    resync_interval_s: float = Field(
        30.0, description="Safety-net resync with the model source, besides the models.lifecycle events."
    )
    registry_timeout_s: float = Field(30.0, description="Deadline of one registry call (artifacts included).")
    warmup_rows: tuple[int, ...] = Field((1, 8, 64), description="Batch sizes run once before a version serves.")
    model_repository: Path | None = Field(
        None,
        description="Serve TorchScript files from this directory (<dir>/<model>/<version>/model.pt, optional "
        "<dir>/<model>/signature.json) instead of the registry; no registry, no models.lifecycle.",
    )
    triton_repository: Path | None = Field(
        None,
        description="With MLOPS_TRITON_URL set: the Triton model repository versions are exported to (shared with "
        "the Triton server); default $MLOPS_HOME/triton-models.",
    )
    triton_timeout_s: float = Field(30.0, description="Deadline of one forward pass on Triton.")
    triton_load_timeout_s: float = Field(120.0, description="How long Triton may take to load an exported version.")
    prediction_log: bool = Field(True, description="Publish every prediction to the `predictions` topic.")
    prediction_log_queue: int = Field(
        100_000,
        ge=1,
        description="Prediction records buffered for the topic; beyond it new ones are dropped and counted.",
    )
    prediction_log_batch: int = Field(2000, ge=1, description="Most records published in one batch.")

    def batching(self, model: str) -> Batching:
        """The batching settings of ``model``: the service-wide ones with the model's overrides applied."""
        base = Batching(
            max_batch_size=self.max_batch_size,
            max_queue_delay_us=self.max_queue_delay_us,
            adaptive=self.adaptive_batching,
            max_queue_rows=self.max_queue_rows,
        )
        override = self.models.get(model)
        if override is None:
            return base
        return base.model_copy(update=override.model_dump(exclude_none=True))
