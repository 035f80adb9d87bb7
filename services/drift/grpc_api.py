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
        if not request.model:
            raise InvalidArgument("model is required", field="model")
        if not request.version:
            raise InvalidArgument("version is required", field="version")
        return (await self._monitor.report(request.model, request.version)).to_proto()

    async def ListAlerts(
        self, request: drift_pb2.ListAlertsRequest, context: grpc.aio.ServicerContext
    ) -> drift_pb2.ListAlertsResponse:
        return drift_pb2.ListAlertsResponse(alerts=await self._monitor.alerts(limit=self._monitor.store.max_alerts))
