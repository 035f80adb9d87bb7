"""gRPC adapter: ``mlops.v1.RegistryService`` over :class:`~services.registry.core.Registry`.

Errors from core are mapped by the shared gRPC instrumentation for unary calls; ``GetArtifact`` streams, so it
maps them itself (the artifact is verified before the first chunk goes out).

A registration binds its version to a run started earlier over REST (``POST /v1/runs``) when its run
carries the tag :data:`RUN_ID_TAG`, and names the feature definitions its dataset was built with in
:data:`DEFINITIONS_HASH_TAG`: RegisterModelVersionRequest and RunInfo have no fields for them yet.
Both tags are taken out of the tags, not stored as tags.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mlops.errors import MlopsError
from mlops.grpc_util import ON_BEHALF_OF_METADATA
from mlops.v1 import registry_pb2, registry_pb2_grpc
from services.registry.actor import who
from services.registry.artifacts import CHUNK_BYTES
from services.registry.core import Registry
from services.registry.views import MetricPoint, RegisterInput, RunInput, Signature, VersionView

ACTOR_METADATA = "x-mlops-actor"
#: Run tag naming an existing run to bind a registration to (taken out of the tags, not stored as one).
RUN_ID_TAG = "mlops.run_id"
DEFINITIONS_HASH_TAG = "mlops.definitions_hash"


def actor_of(context: grpc.aio.ServicerContext, default: str = "grpc") -> str:
    declared = next((value for key, value in context.invocation_metadata() or ()
                     if key == ACTOR_METADATA and isinstance(value, str) and value), "")
    return who(declared, default)


def on_behalf_of(context: grpc.aio.ServicerContext) -> str:
    """Whom a calling service (the trainer) declares it acts for, as declared."""
    return next((value[:200] for key, value in context.invocation_metadata() or ()
                 if key == ON_BEHALF_OF_METADATA and isinstance(value, str)), "")


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
        reference_sha256=view.reference_sha256,
    )


def register_from_proto(req: registry_pb2.RegisterModelVersionRequest, actor: str) -> RegisterInput:
    run = req.run
    tags = dict(run.tags)
    run_id = tags.pop(RUN_ID_TAG, "")
    definitions_hash = tags.pop(DEFINITIONS_HASH_TAG, "")
    history = [
        MetricPoint(key=p.key, value=p.value, step=p.step,
                    time=p.time.ToDatetime(tzinfo=UTC) if p.HasField("time") else None)
        for p in run.history
    ]
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
            tags=tags,
            history=history,
            dataset_id=run.dataset_id,
            definitions_hash=definitions_hash,
            git_commit=run.git_commit,
            git_dirty=run.git_dirty,
            diff_sha256=run.diff_sha256,
            python_version=run.python_version,
            pip_freeze=run.pip_freeze,
            seed=run.seed,
            hardware=run.hardware,
        ),
        stage=req.stage,
        reason=req.reason,
        actor=actor,
        reference=req.reference,
        idempotency_key=req.idempotency_key,
        run_id=run_id,
        force=req.force,
    )


class Servicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def RegisterModelVersion(
        self, request: registry_pb2.RegisterModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ModelVersion:
        view = await self._registry.register(register_from_proto(request, actor_of(context)),
                                             on_behalf_of=on_behalf_of(context))
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
            request.model, request.version, request.stage, reason=request.reason, actor=actor_of(context),
            force=request.force,
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

    async def GetReference(
        self, request: registry_pb2.ModelVersionRef, context: grpc.aio.ServicerContext
    ) -> registry_pb2.Reference:
        _, data = await self._registry.reference(request.model, request.version)
        return registry_pb2.Reference(json=data)

    async def Rollback(
        self, request: registry_pb2.RollbackRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ModelVersion:
        view = await self._registry.rollback(request.model, reason=request.reason, actor=actor_of(context))
        return version_to_proto(view)
