"""gRPC adapter: ``mlops.v1.DriftService``."""

from __future__ import annotations

import grpc

from mlops.errors import InvalidArgument
from mlops.v1 import drift_pb2, drift_pb2_grpc
from services.drift.core import DriftMonitor


class Servicer(drift_pb2_grpc.DriftServiceServicer):
    def __init__(self, monitor: DriftMonitor) -> None:
        self._monitor = monitor

    async def GetDrift(
        self, request: drift_pb2.DriftReportRequest, context: grpc.aio.ServicerContext
    ) -> drift_pb2.DriftReport:
        """The report; ``details_json`` holds every current score, as ``GET /v1/drift/{model}/{version}``."""
        if not request.model:
            raise InvalidArgument("model is required", field="model")
        if not request.version:
            raise InvalidArgument("version is required", field="version")
        return (await self._monitor.report(request.model, request.version)).to_proto()

    async def ListAlerts(
        self, request: drift_pb2.ListAlertsRequest, context: grpc.aio.ServicerContext
    ) -> drift_pb2.ListAlertsResponse:
        """Newest first, filtered by model and version when given; ``limit`` 0 means 100."""
        if request.limit < 0:
            raise InvalidArgument("limit must be >= 0", field="limit")
        limit = min(request.limit or 100, self._monitor.store.max_alerts)
        alerts = await self._monitor.alerts(request.model or None, request.version or None, None, limit)
        return drift_pb2.ListAlertsResponse(alerts=[a for a, _ in alerts])
