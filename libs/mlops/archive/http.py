"""``GET /v1/predictions``: the archive by prediction_id, model version and time range, with outcomes."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query

from mlops.archive.store import ArchiveStore


def router(store: ArchiveStore) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["archive"])

    @api.get("/predictions")
    async def predictions(
        prediction_id: str | None = None,
        model: str | None = None,
        version: str | None = None,
        start: datetime | None = Query(None, description="ISO time, inclusive"),
        end: datetime | None = Query(None, description="ISO time, exclusive"),
        limit: int = Query(100, ge=1, le=10_000),
    ) -> dict[str, Any]:
        rows = await asyncio.to_thread(store.query, prediction_id, model, version, start, end, limit)
        return {"predictions": rows}

    return api
