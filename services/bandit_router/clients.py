"""The router's peers over gRPC: registry (signatures, aliases; cached), feature store (online
features by entity) and inference (KServe V2 ``ModelInfer`` on tritonclient's message types).

Peer failures become :class:`Unavailable` (503, retryable). A variant that cannot serve right now
raises :class:`Unservable` (the registry has no such version, or its alias points nowhere: 409),
:class:`NotLoaded` (inference has not loaded that version, or is still loading it: 503) or
:class:`InferenceFailed` (inference errored on it: 503); the router counts an error against the variant
and falls back to another one. The registry client also moves stages (promotion, retirement) as the
actor ``bandit-router``.
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2, service_pb2_grpc

from mlops.errors import Conflict, InvalidArgument, MlopsError, Unavailable
from mlops.v1 import feature_pb2, feature_pb2_grpc, registry_pb2, registry_pb2_grpc


@dataclass(frozen=True, slots=True)
class Signature:
    """What the router needs of a model version to call it."""

    model: str
    version: str
    features: tuple[str, ...]
    input_name: str
    output_name: str


class Unservable(Conflict):
    """The variant points at no registered version (unknown version, alias pointing nowhere)."""


class NotLoaded(Unavailable):
    """Inference does not serve the variant's version (not loaded, or still loading)."""


class InferenceFailed(Unavailable):
    """Inference failed on the variant's version (an error, a deadline): another variant answers."""


#: Errors of one variant that let another variant answer the request instead.
FALLBACK_ERRORS: tuple[type[Exception], ...] = (Unservable, NotLoaded, InferenceFailed)

#: Who the registry records as the actor of the router's stage changes.
ACTOR = "bandit-router"
ACTOR_METADATA = "x-mlops-actor"


def _peer_error(peer: str, exc: grpc.aio.AioRpcError) -> MlopsError:
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(f"{peer}: {exc.details()}")
    return Unavailable(f"{peer} unavailable: {exc.code().name}: {exc.details()}")


class RegistryLookup:
    """Signatures (immutable per version: cached, bounded) and aliases (cached for ``alias_ttl_s``)."""

    def __init__(self, channel: grpc.aio.Channel, alias_ttl_s: float = 2.0, timeout_s: float = 5.0) -> None:
        self._stub = registry_pb2_grpc.RegistryServiceStub(channel)
        self._alias_ttl_s = alias_ttl_s
        self._timeout = timeout_s
        self._signatures: OrderedDict[tuple[str, str], Signature] = OrderedDict()
        self._aliases: dict[tuple[str, str], tuple[float, str]] = {}

    @staticmethod
    def _signature(mv: registry_pb2.ModelVersion) -> Signature:
        return Signature(
            model=mv.model,
            version=mv.version,
            features=tuple(mv.signature.features),
            input_name=mv.signature.input_name or "input",
            output_name=mv.signature.output_name or "output",
        )

    def _remember(self, sig: Signature) -> Signature:
        self._signatures[(sig.model, sig.version)] = sig
        self._signatures.move_to_end((sig.model, sig.version))
        while len(self._signatures) > 4096:
            self._signatures.popitem(last=False)
        return sig

    async def signature(self, model: str, version: str) -> Signature:
        cached = self._signatures.get((model, version))
        if cached is not None:
            return cached
        try:
            mv = await self._stub.GetModelVersion(
                registry_pb2.ModelVersionRef(model=model, version=version), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise Unservable(f"model '{model}' version '{version}' is not in the registry") from None
            raise _peer_error("registry", exc) from None
        return self._remember(self._signature(mv))

    async def resolve(self, model: str, alias: str) -> Signature:
        """The version ``alias`` points at now (at most ``alias_ttl_s`` old)."""
        key = (model, alias)
        hit = self._aliases.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return await self.signature(model, hit[1])
        try:
            mv = await self._stub.ResolveAlias(
                registry_pb2.ResolveAliasRequest(model=model, alias=alias), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise Unservable(f"model '{model}' has no version with alias '{alias}'") from None
            raise _peer_error("registry", exc) from None
        self._aliases[key] = (now + self._alias_ttl_s, mv.version)
        return self._remember(self._signature(mv))


    async def version(self, model: str, version: str) -> registry_pb2.ModelVersion:
        """The version as the registry has it now (uncached: its stage changes)."""
        try:
            return await self._stub.GetModelVersion(
                registry_pb2.ModelVersionRef(model=model, version=version), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise Unservable(f"model '{model}' version '{version}' is not in the registry") from None
            raise _peer_error("registry", exc) from None

    async def set_stage(self, model: str, version: str, stage: str, reason: str) -> registry_pb2.ModelVersion:
        """Move a version to ``stage`` (the registry archives the previous production on promotion)."""
        try:
            mv = await self._stub.SetStage(
                registry_pb2.SetStageRequest(model=model, version=version, stage=stage, reason=reason),
                timeout=self._timeout,
                metadata=((ACTOR_METADATA, ACTOR),),
            )
        except grpc.aio.AioRpcError as exc:
            raise _peer_error("registry", exc) from None
        # Aliases moved: forget the cached ones of this model so the next request resolves afresh.
        for key in [k for k in self._aliases if k[0] == model]:
            self._aliases.pop(key, None)
        return mv


class FeatureLookup:
    """Online features of one entity from the feature service."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 2.0) -> None:
        self._stub = feature_pb2_grpc.FeatureServiceStub(channel)
        self._timeout = timeout_s

    async def online(self, entity_id: str, features: list[str]) -> dict[str, Any]:
        """The entity's values of ``features`` that the store has (missing ones are absent)."""
        try:
            response = await self._stub.GetOnlineFeatures(
                feature_pb2.OnlineFeaturesRequest(entities=[entity_id], features=features), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _peer_error("feature service", exc) from None
        for row in response.rows:
            if row.entity_id == entity_id and row.found:
                return dict(json_format.MessageToDict(row.values))
        return {}


class InferenceCaller:
    """One-row ``ModelInfer`` calls to the inference service, on a platform channel
    (:func:`mlops.grpc_util.channel`: trace context and service token in metadata, no interceptor task)."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 5.0) -> None:
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        self._timeout = timeout_s

    async def _call(self, request: service_pb2.ModelInferRequest) -> service_pb2.ModelInferResponse:
        return await self._stub.ModelInfer(request, timeout=self._timeout)

    async def infer(self, sig: Signature, row: list[float]) -> list[float]:
        request = service_pb2.ModelInferRequest(
            model_name=sig.model,
            model_version=sig.version,
            inputs=[
                service_pb2.ModelInferRequest.InferInputTensor(
                    name=sig.input_name, datatype="FP32", shape=[1, len(row)]
                )
            ],
            outputs=[service_pb2.ModelInferRequest.InferRequestedOutputTensor(name=sig.output_name)],
            raw_input_contents=[np.asarray(row, dtype="<f4").tobytes()],
        )
        # The router publishes the prediction itself (with endpoint, variant and unit): inference must not
        # log it a second time under another id.
        request.parameters["prediction_log"].bool_param = False
        try:
            response = await self._call(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                raise NotLoaded(f"inference cannot serve {sig.model}:{sig.version}: {exc.details()}") from None
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise _peer_error("inference", exc) from None
            raise InferenceFailed(
                f"inference failed on {sig.model}:{sig.version}: {exc.code().name}: {exc.details()}"
            ) from None
        return decode_output(response, sig.output_name)


_FLOAT_CODES = {"FP32": "f", "FP64": "d", "FP16": "e"}
_FLOAT_SIZES = {"f": 4, "d": 8, "e": 2}


def decode_output(response: service_pb2.ModelInferResponse, name: str) -> list[float]:
    """The named output's values as floats (raw or typed contents)."""
    for i, out in enumerate(response.outputs):
        if out.name != name:
            continue
        if i < len(response.raw_output_contents):
            code = _FLOAT_CODES.get(out.datatype)
            if code is None:
                raise Unavailable(f"inference returned {out.datatype} for '{name}', expected a float type")
            raw = response.raw_output_contents[i]
            # struct rather than numpy: for a handful of values, numpy's array setup costs more than the work.
            return list(struct.unpack(f"<{len(raw) // _FLOAT_SIZES[code]}{code}", raw))
        contents = out.contents
        return [float(x) for x in (contents.fp32_contents or contents.fp64_contents)]
    raise Unavailable(f"inference response has no output '{name}'")
