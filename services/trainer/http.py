"""REST adapter: ``POST /v1/training-jobs`` and ``GET /v1/training-jobs[/{id}]``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from services.trainer.core import Trainer
from services.trainer.jobs import JobSpec

INHERIT = " Empty: as the current production version was trained (from its lineage)."


class TrainingJobCreate(BaseModel):
    model: str = Field(description="Registry model name to register the new version under.")
    stream: str = Field("", description="Event stream the dataset is built from." + INHERIT)
    features: list[str] = Field(default_factory=list, description="Feature names, in model order." + INHERIT)
    label: str = Field("", description="Label column: class ids 0..C-1." + INHERIT)
    stage: str = Field("candidate", description="Stage of the registered version (after the gates pass).")
    epochs: int = Field(0, ge=0, description="Epochs; 0 takes the trainer's default.")
    seed: int = Field(0, ge=0, description="Seed; the same dataset, code and seed give the same metrics.")
    reason: str = Field("", description="Why; recorded with the run and the registration.")
    request_id: str = Field("", description="Idempotency key: a retry with the same id returns the same job.")
    recent_rows: int = Field(0, ge=0, description="Train on the most recent rows only; 0: every row.")
    sensitive_attribute: str = Field(
        "", description="Fairness gate: the attribute (a stream field) whose groups must get similar accuracy. "
        "Empty: the one the production version declared, if any."
    )
    fairness_max_gap: float = Field(0.0, ge=0.0, le=1.0, description="Fairness gate threshold; 0: the default.")
    processes: int = Field(0, ge=0, description="Data-parallel processes (torchrun); 0: the trainer's default.")
    force: bool = Field(
        False, description="With stage production: register although a gate was skipped (the production version "
        "reads a feature this dataset lacks...). Needs a reason and the promote permission; audited."
    )


def router(trainer: Trainer) -> APIRouter:
    api = APIRouter(prefix="/v1/training-jobs", tags=["trainer"])

    @api.post("", status_code=status.HTTP_202_ACCEPTED)
    async def submit(body: TrainingJobCreate) -> dict[str, Any]:
        spec = JobSpec(**body.model_dump(exclude={"request_id"}))  # requested_by: from the token (core.submit)
        return (await trainer.submit(spec, request_id=body.request_id)).to_dict()

    @api.get("")
    async def recent(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        return {"jobs": [j.to_dict() for j in await trainer.recent(limit)]}

    @api.get("/{job_id}")
    async def get(job_id: str) -> dict[str, Any]:
        return (await trainer.get(job_id)).to_dict()

    return api
