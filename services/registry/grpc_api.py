"""gRPC adapter: ``mlops.v1.RegistryService`` over :class:`~services.registry.core.Registry`.

Errors from core are mapped by the shared interceptor for unary calls; ``GetArtifact`` streams, so it
maps them itself (the artifact is verified before the first chunk goes out).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mlops.errors import MlopsError
from mlops.v1 import registry_pb2, registry_pb2_grpc
from services.registry.artifacts import CHUNK_BYTES
from services.registry.core import Registry
from services.registry.views import RegisterInput, RunInput, Signature, VersionView

ACTOR_METADATA = "x-mlops-actor"


def actor_of(context: grpc.aio.ServicerContext, default: str = "grpc") -> str:
    for key, value in context.invocation_metadata() or ():
        if key == ACTOR_METADATA and isinstance(value, str) and value:
            return value[:200]
    return default


def version_to_proto(view: VersionView) -> registry_pb2.ModelVersion:
    created = Timestamp()
    created.FromDatetime(view.created_at)
    return registry_pb2.ModelVersion(
        model=view.model,
        version=view.version,
        run_id=view.run_id,
        stage=view.stage,
        artifact_sha256=view.artifact_sha256,
        artifact_format=view.artifact_format,
        signature=registry_pb2.ModelSignature(
            features=view.signature.features,
            input_name=view.signature.input_name,
            output_name=view.signature.output_name,
            classes=view.signature.classes,
        ),
        created_at=created,
        dataset_id=view.dataset_id,
    )


def register_from_proto(req: registry_pb2.RegisterModelVersionRequest, actor: str) -> RegisterInput:
    run = req.run
    return RegisterInput(
        model=req.model,
        artifact=req.artifact,
        artifact_format=req.artifact_format,
        signature=Signature(
            features=list(req.signature.features),
            input_name=req.signature.input_name,
            output_name=req.signature.output_name,
            classes=list(req.signature.classes),
        ),
        run=RunInput(
            experiment=run.experiment,
            params=dict(run.params),
            metrics=dict(run.metrics),
            tags=dict(run.tags),
            dataset_id=run.dataset_id,
            git_commit=run.git_commit,
            git_dirty=run.git_dirty,
            python_version=run.python_version,
            seed=run.seed,
            hardware=run.hardware,
        ),
        stage=req.stage,
        reason=req.reason,
        actor=actor,
    )


class Servicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def RegisterModelVersion(
        self, request: registry_pb2.RegisterModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ModelVersion:
        view = await self._registry.register(register_from_proto(request, actor_of(context)))
        return version_to_proto(view)

    async def GetModelVersion(
        self, request: registry_pb2.ModelVersionRef, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ModelVersion:
        return version_to_proto(await self._registry.get_version(request.model, request.version))

    async def ListModelVersions(
        self, request: registry_pb2.ListModelVersionsRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListModelVersionsResponse:
        views = await self._registry.list_versions(request.model, list(request.stages))
        return registry_pb2.ListModelVersionsResponse(versions=[version_to_proto(v) for v in views])

    async def ResolveAlias(
        self, request: registry_pb2.ResolveAliasRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ModelVersion:
        return version_to_proto(await self._registry.resolve_alias(request.model, request.alias))

    async def SetStage(
        self, request: registry_pb2.SetStageRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ModelVersion:
        view = await self._registry.set_stage(
            request.model, request.version, request.stage, reason=request.reason, actor=actor_of(context)
        )
        return version_to_proto(view)

    async def GetArtifact(
        self, request: registry_pb2.ModelVersionRef, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[registry_pb2.ArtifactChunk]:
        try:
            _, data = await self._registry.artifact(request.model, request.version)
        except MlopsError as exc:
            await context.abort(exc.grpc_code, exc.message)
            return
        for start in range(0, len(data), CHUNK_BYTES):
            yield registry_pb2.ArtifactChunk(data=data[start : start + CHUNK_BYTES])
