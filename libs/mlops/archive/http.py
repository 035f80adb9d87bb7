"""``GET /v1/predictions``: the archive by prediction_id, model version and time range, with outcomes."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query

from mlops.archive.store import ArchiveStore
from mlops.times import UtcDatetime


def router(store: ArchiveStore) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["archive"])

    @api.get("/predictions")
    async def predictions(
        prediction_id: str | None = None,
        model: str | None = None,
        version: str | None = None,
        start: UtcDatetime | None = Query(None, description="ISO time, inclusive (UTC without an offset)"),
        end: UtcDatetime | None = Query(None, description="ISO time, exclusive (UTC without an offset)"),
        limit: int = Query(100, ge=1, le=10_000),
    ) -> dict[str, Any]:
        rows = await asyncio.to_thread(store.query, prediction_id, model, version, start, end, limit)
        return {"predictions": rows}

    return api
