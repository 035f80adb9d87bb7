"""``GET /v1/audit``: the audit trail, newest first, filtered by actor (or its token id), action, target and time."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query

from mlops.auth.audit import AuditStore


def router(store: AuditStore) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["audit"])

    @api.get("/audit")
    async def query(
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: str | None = Query(None, description="ISO time; entries at or after it"),
        limit: int = Query(200, ge=1, le=10_000),
        actor_id: str | None = Query(None, description="Only this token id."),
    ) -> dict[str, Any]:
        entries = await asyncio.to_thread(store.query, actor, action, target, since, limit, actor_id)
        return {"entries": entries}

    return api
