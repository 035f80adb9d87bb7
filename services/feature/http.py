"""REST adapter of the feature service: online reads, training sets."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.feature.core import FeatureCore


class OnlineRequest(BaseModel):
    entities: list[str] = Field(..., description="Entity ids to read.")
    features: list[str] = Field(default_factory=list, description="Feature names; empty for all.")


class DatasetRequest(BaseModel):
    stream: str
    features: list[str]
    label: str
    start: datetime | None = None
    end: datetime | None = None


def router(core: FeatureCore) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["feature"])

    @api.post("/features/online")
    async def online(req: OnlineRequest) -> dict[str, Any]:
        rows = await core.read_online(req.entities, req.features)
        for row in rows:
            row["event_time"] = row["event_time"].isoformat() if row["event_time"] else None
        return {"rows": rows}

    @api.post("/datasets", status_code=201)
    async def build_dataset(req: DatasetRequest) -> dict[str, Any]:
        return await asyncio.to_thread(core.datasets.build, req.stream, req.features, req.label, req.start, req.end)

    @api.get("/datasets/{dataset_id}")
    async def dataset_card(dataset_id: str) -> dict[str, Any]:
        return core.datasets.card(dataset_id)

    return api
