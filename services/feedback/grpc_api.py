"""gRPC adapter: ``mlops.v1.FeedbackService``."""

from __future__ import annotations

import grpc

from mlops.errors import InvalidArgument
from mlops.v1 import feedback_pb2, feedback_pb2_grpc
from services.feedback import metrics
from services.feedback.core import FeedbackCore


class Servicer(feedback_pb2_grpc.FeedbackServiceServicer):
    def __init__(self, core: FeedbackCore) -> None:
        self._core = core

    async def SendFeedback(
        self, request: feedback_pb2.FeedbackBatch, context: grpc.aio.ServicerContext
    ) -> feedback_pb2.FeedbackAck:
        n = await self._core.submit(list(request.items), batch_field="items")
        metrics.FEEDBACK_ACCEPTED.labels("grpc").inc(n)
        return feedback_pb2.FeedbackAck(accepted=n)

    async def GetQuality(
        self, request: feedback_pb2.QualityRequest, context: grpc.aio.ServicerContext
    ) -> feedback_pb2.Quality:
        """Online quality of one version since it started serving; figures without data are NaN."""
        if not request.model:
            raise InvalidArgument("model is required", field="model")
        if not request.version:
            raise InvalidArgument("version is required", field="version")
        return (await self._core.quality(request.model, request.version)).to_proto()
