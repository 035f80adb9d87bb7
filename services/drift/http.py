"""REST adapter: ``GET /v1/drift/{model}/{version}`` and ``GET /v1/alerts``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.drift.core import DriftMonitor
from services.drift.report import alert_to_dict


class DriftReportOut(BaseModel):
    model: str
    version: str
    predictions: int
    labels: int
    prediction_mean: float
    prediction_drift: bool
    prediction_alerts: int
    prediction_alert_at: str | None
    accuracy: float | None
    concept_drift: bool
    concept_alerts: int
    concept_alert_at: str | None
    last_seen: str | None
    detector: str


class AlertOut(BaseModel):
    alert_id: str
    model: str
    version: str
    kind: str
    feature: str
    score: float
    threshold: float
    detector: str
    time: str | None


class AlertsOut(BaseModel):
    alerts: list[AlertOut]


def router(monitor: DriftMonitor) -> APIRouter:
    api = APIRouter(tags=["drift"])

    @api.get("/v1/drift/{model}/{version}", response_model=DriftReportOut)
    async def get_drift(model: str, version: str) -> DriftReportOut:
        return DriftReportOut(**(await monitor.report(model, version)).to_dict())  # type: ignore[arg-type]

    @api.get("/v1/alerts", response_model=AlertsOut)
    async def list_alerts(
        model: str | None = None,
        version: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> AlertsOut:
        """Recent alerts, newest first."""
        alerts = await monitor.alerts(model, version, limit)
        return AlertsOut(alerts=[AlertOut(**alert_to_dict(a)) for a in alerts])  # type: ignore[arg-type]

    return api
