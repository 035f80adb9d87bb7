"""REST adapter: ``POST /v1/training-jobs`` and ``GET /v1/training-jobs[/{id}]``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from services.trainer.core import Trainer
from services.trainer.jobs import JobSpec


class TrainingJobCreate(BaseModel):
    model: str = Field(description="Registry model name to register the new version under.")
    stream: str = Field(description="Event stream the dataset is built from.")
    features: list[str] = Field(description="Feature names, in the order the model takes them.")
    label: str = Field(description="Label column: class ids 0..C-1.")
    stage: str = Field("candidate", description="Stage of the registered version.")
    epochs: int = Field(0, ge=0, description="Epochs; 0 takes the trainer's default.")
    seed: int = Field(0, ge=0, description="Seed; the same seed and data give the same weights.")
    reason: str = Field("", description="Why; recorded with the run and the registration.")
    request_id: str = Field("", description="Idempotency key: a retry with the same id returns the same job.")


def router(trainer: Trainer) -> APIRouter:
    api = APIRouter(prefix="/v1/training-jobs", tags=["trainer"])

    @api.post("", status_code=status.HTTP_202_ACCEPTED)
    async def submit(body: TrainingJobCreate) -> dict[str, Any]:
        spec = JobSpec(
            model=body.model,
            stream=body.stream,
            features=body.features,
            label=body.label,
            stage=body.stage,
            epochs=body.epochs,
            seed=body.seed,
            reason=body.reason,
        )
        return (await trainer.submit(spec, request_id=body.request_id)).to_dict()

    @api.get("")
    async def recent(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        return {"jobs": [j.to_dict() for j in await trainer.recent(limit)]}

    @api.get("/{job_id}")
    async def get(job_id: str) -> dict[str, Any]:
        return (await trainer.get(job_id)).to_dict()

    return api
