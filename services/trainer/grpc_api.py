"""gRPC adapter: ``mlops.v1.TrainerService``. A client may send ``x-mlops-request-id`` metadata to make
``SubmitJob`` idempotent across retries."""

from __future__ import annotations

import grpc

from mlops.v1 import trainer_pb2, trainer_pb2_grpc
from services.trainer.core import Trainer
from services.trainer.jobs import JobSpec

REQUEST_ID_METADATA = "x-mlops-request-id"


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_METADATA and isinstance(value, str):
            return value[:200]
    return ""


class Servicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    async def SubmitJob(
        self, request: trainer_pb2.TrainingJobSpec, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.TrainingJob:
        job = await self._trainer.submit(JobSpec.from_proto(request), request_id=_request_id(context))
        return job.to_proto()

    async def GetJob(
        self, request: trainer_pb2.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.TrainingJob:
        return (await self._trainer.get(request.id)).to_proto()
