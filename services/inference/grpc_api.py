"""gRPC transports: ``inference.GRPCInferenceService`` (KServe V2, on tritonclient's generated stubs) and
``mlops.v1.InferenceAdmin``. Both are thin: decode, call the :class:`DataPlane`, encode.

Responses carry output data in ``raw_output_contents`` (as Triton does); requests may use either
``raw_input_contents`` or the typed ``contents`` fields.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from mlops.errors import InvalidArgument
from mlops.v1 import inference_pb2, inference_pb2_grpc
from services.inference import codec
from services.inference.core import DataPlane, InferRequest, ModelMetadata, Tensor

#: V2 datatype -> the InferTensorContents field holding it (FP16 has none: raw contents only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def tensor_from_contents(
    name: str, datatype: str, shape: list[int], contents: service_pb2.InferTensorContents
) -> np.ndarray:
    """An input given in the typed ``contents`` fields, as a numpy array."""
    dtype = codec.numpy_dtype(datatype, name)
    dims = codec.check_shape(shape, name)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidArgument(f"input '{name}': {datatype} must be sent in raw_input_contents", field=name)
    values = getattr(contents, field)
    if len(values) != codec.element_count(dims):
        raise InvalidArgument(
            f"input '{name}': shape {list(dims)} needs {codec.element_count(dims)} elements, got {len(values)}",
            field=name,
        )
    if datatype == "BYTES":
        out = np.empty(len(values), dtype=np.object_)
        out[:] = list(values)
        return out.reshape(dims)
    try:
        return np.asarray(values, dtype=dtype).reshape(dims)
    except (OverflowError, ValueError) as exc:
        raise InvalidArgument(f"input '{name}': {exc}", field=name) from None


def contents_from_array(array: np.ndarray) -> service_pb2.InferTensorContents:
    """The typed ``contents`` for an array (for clients that do not use raw contents)."""
    datatype = codec.datatype_of(array)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidArgument(f"{datatype} has no typed contents field; use raw contents")
    contents = service_pb2.InferTensorContents()
    flat = array.reshape(-1)
    values: list[Any] = list(flat) if datatype == "BYTES" else flat.tolist()
    getattr(contents, field).extend(values)
    return contents


def parameters_from_proto(params: Any) -> dict[str, Any]:
    """A ``map<string, InferParameter>`` as plain values."""
    out: dict[str, Any] = {}
    for key, param in params.items():
        kind = param.WhichOneof("parameter_choice")
        if kind is not None:
            out[key] = getattr(param, kind)
    return out


def parameters_to_proto(params: dict[str, Any], target: Any) -> None:
    """Plain values into a ``map<string, InferParameter>``."""
    for key, value in params.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            target[key].int64_param = value
        elif isinstance(value, float):
            target[key].double_param = value
        else:
            target[key].string_param = str(value)


def request_from_proto(request: service_pb2.ModelInferRequest) -> InferRequest:
    # Every field is read once: each read of a protobuf field from Python builds a new object.
    raw = request.raw_input_contents
    inputs = request.inputs
    if raw and len(raw) != len(inputs):
        raise InvalidArgument(f"{len(raw)} raw_input_contents for {len(inputs)} inputs", field="raw_input_contents")
    tensors: list[Tensor] = []
    for i, item in enumerate(inputs):
        name, datatype = item.name, item.datatype
        if raw:
            array = codec.from_raw(name, datatype, item.shape, raw[i])
        else:
            array = tensor_from_contents(name, datatype, list(item.shape), item.contents)
        tensors.append(Tensor(name, datatype, array))
    outputs = request.outputs
    parameters = request.parameters
    return InferRequest(
        model=request.model_name,
        version=request.model_version,
        id=request.id,
        inputs=tensors,
        outputs=[o.name for o in outputs] if outputs else [],
        parameters=parameters_from_proto(parameters) if parameters else {},
    )


def _tensor_metadata(meta: ModelMetadata) -> service_pb2.ModelMetadataResponse:
    Tm = service_pb2.ModelMetadataResponse.TensorMetadata
    return service_pb2.ModelMetadataResponse(
        name=meta.name,
        versions=meta.versions,
        platform=meta.platform,
        inputs=[Tm(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
        outputs=[Tm(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
    )


_Out = service_pb2.ModelInferResponse.InferOutputTensor


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The V2 methods tritonclient.grpc uses; the rest stay UNIMPLEMENTED (the stubs' default)."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=self._plane.live())

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerReadyResponse(ready=self._plane.ready())

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ModelReadyResponse(ready=self._plane.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        meta = self._plane.server_metadata()
        return service_pb2.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=meta.extensions)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return _tensor_metadata(self._plane.model_metadata(request.name, request.version))

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        result = await self._plane.infer(request_from_proto(request))
        response = service_pb2.ModelInferResponse(
            model_name=result.model,
            model_version=result.version,
            id=result.id,
            outputs=[_Out(name=t.name, datatype=t.datatype, shape=t.shape) for t in result.outputs],
            raw_output_contents=[codec.to_raw(t.array) for t in result.outputs],
        )
        if result.parameters:
            parameters_to_proto(result.parameters, response.parameters)
        return response


class AdminServicer(inference_pb2_grpc.InferenceAdminServicer):
    """``mlops.v1.InferenceAdmin``: what is loaded, where."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    async def ListLoadedModels(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return inference_pb2.ListLoadedModelsResponse(
            models=[
                inference_pb2.LoadedModel(
                    model=v.model,
                    version=v.version,
                    stage=v.stage,
                    artifact_sha256=v.sha256,
                    device=v.runtime.device,
                )
                for v in self._plane.repository.loaded()
            ]
        )
