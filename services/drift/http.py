"""REST adapter: ``GET /v1/drift/{model}/{version}`` (every current score), ``GET /v1/alerts`` (with their
evidence) and ``GET /v1/retraining`` (the policy, the requests made and the decisions taken)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from services.drift.core import DriftMonitor
from services.drift.report import alert_to_dict
from services.drift.retraining import Retrainer

Kind = Literal["data", "prediction", "concept", "quality"]


class DriftReportOut(BaseModel):
    """Counts, whether each kind of drift was ever alerted and is drifting now, and every current score."""

    model_config = ConfigDict(extra="allow")
    model: str
    version: str
    predictions: int
    labels: int
    prediction_mean: float
    accuracy: float | None
    recent: dict[str, Any]
    detector: str
    last_seen: str | None
    reference: dict[str, Any]
    drifting: dict[str, bool]
    data_drift: bool
    prediction_drift: bool
    concept_drift: bool
    quality_drift: bool
    scores: dict[str, Any]


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
    evidence: dict[str, Any] | None


class AlertsOut(BaseModel):
    alerts: list[AlertOut]


def router(monitor: DriftMonitor, retrainer: Retrainer | None = None) -> APIRouter:
    api = APIRouter(tags=["drift"])

    @api.get("/v1/drift/{model}/{version}", response_model=DriftReportOut)
    async def get_drift(model: str, version: str) -> dict[str, Any]:
        return (await monitor.report(model, version)).to_dict()

    @api.get("/v1/alerts", response_model=AlertsOut)
    async def list_alerts(
        model: str | None = None,
        version: str | None = None,
        kind: Kind | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> AlertsOut:
        """Recent alerts, newest first, each with its evidence."""
        alerts = await monitor.alerts(model, version, kind, limit)
        return AlertsOut(alerts=[AlertOut(**alert_to_dict(a, e)) for a, e in alerts])  # type: ignore[arg-type]

    if retrainer is not None:
        @api.get("/v1/retraining")
        async def get_retraining(
            model: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
        ) -> dict[str, Any]:
            """The retraining policy in force, the training requests made (with their reason) and every
            decision taken (requested, or held back by the cooldown), newest first."""
            return await retrainer.recorded(model, limit)

    return api
