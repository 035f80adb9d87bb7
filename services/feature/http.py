"""REST adapter of the feature service: online reads, definitions, data quality, training sets."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from mlops.times import UtcDatetime
from services.feature.core import FeatureCore
from services.feature.datasets import DatasetSpec


class OnlineRequest(BaseModel):
    entities: list[str] = Field(..., description="Entity ids to read.")
    features: list[str] = Field(default_factory=list, description="Feature names; empty for all.")
    as_of: UtcDatetime | None = Field(
        None, description="Evaluate windows at this time instead of now (for checks; past buckets are pruned; "
                          "UTC without an offset)."
    )


class DatasetRequest(BaseModel):
    stream: str = Field("", description="The stream whose events are the label rows (unless `rows` is given).")
    features: list[str] = Field(..., description="Fields of the label rows, or defined features (as of each row).")
    label: str = Field(..., description="The label field of the label rows.")
    start: UtcDatetime | None = Field(None, description="Only label rows at or after this event time (UTC without "
                                                        "an offset).")
    end: UtcDatetime | None = Field(None, description="Only label rows before this event time (UTC without an "
                                                      "offset).")
    last_n: int = Field(0, ge=0, description="Keep only the most recent N label rows by event time (0: all).")
    rows: list[dict[str, Any]] | None = Field(
        None, description="Label rows inline: {entity_id, event_time, <label>, ...} (e.g. from a file)."
    )


def router(core: FeatureCore) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["feature"])

    @api.post("/features/online")
    async def online(req: OnlineRequest) -> dict[str, Any]:
        rows = await core.read_online(req.entities, req.features, req.as_of)
        for row in rows:
            row["event_time"] = row["event_time"].isoformat() if row["event_time"] else None
        return {"rows": rows}

    @api.get("/features")
    async def definitions() -> dict[str, Any]:
        return {"digest": core.defs.digest, "views": [v.model_dump() for v in core.defs.views]}

    @api.get("/features/quality")
    async def quality() -> dict[str, Any]:
        return await core.quality.report()

    @api.post("/datasets", status_code=201)
    async def build_dataset(req: DatasetRequest) -> dict[str, Any]:
        spec = DatasetSpec(stream=req.stream, features=req.features, label=req.label, start=req.start,
                           end=req.end, last_n=req.last_n, rows=req.rows)
        return await asyncio.to_thread(core.build_dataset, spec)

    @api.get("/datasets")
    async def list_datasets() -> dict[str, Any]:
        return {"datasets": await asyncio.to_thread(core.datasets.list)}

    @api.get("/datasets/{dataset_id}")
    async def dataset_card(dataset_id: str) -> dict[str, Any]:
        return core.datasets.card(dataset_id)

    @api.get("/datasets/{dataset_id}/data")
    async def dataset_data(dataset_id: str) -> Response:
        data = await asyncio.to_thread(core.datasets.read, dataset_id)
        return Response(data, media_type="application/vnd.apache.parquet",
                        headers={"content-disposition": f'attachment; filename="{dataset_id}.parquet"'})

    return api
