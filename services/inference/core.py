"""The data plane every transport ends in (REST, gRPC): health, metadata and inference on loaded versions.

Transports decode wire tensors with :mod:`services.inference.codec` into :class:`Tensor` objects and
call :class:`DataPlane`; it checks them against the version's signature (one FP32 input ``[N, F]``),
runs them through the version's dynamic batcher and returns the output tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlops import __version__
from mlops.errors import InvalidArgument, Unavailable
from services.inference import metrics
from services.inference.repository import LoadedVersion, ModelRepository

SERVER_NAME = "mlops-inference"
EXTENSIONS = ("binary_tensor_data", "model_repository")
PLATFORM = "pytorch_torchscript"


@dataclass(slots=True)
class Tensor:
    """A named tensor: ``datatype`` is the V2 name, ``array`` holds its data in ``shape``."""

    name: str
    datatype: str
    array: np.ndarray

    @property
    def shape(self) -> list[int]:
        return list(self.array.shape)


@dataclass(slots=True)
class InferRequest:
    model: str
    version: str = ""
    id: str = ""
    inputs: list[Tensor] = field(default_factory=list)
    #: requested output names; empty: every output.
    outputs: list[str] = field(default_factory=list)


@dataclass(slots=True)
class InferResponse:
    model: str
    version: str
    id: str
    outputs: list[Tensor]


@dataclass(slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: list[str]


@dataclass(slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: list[int]


@dataclass(slots=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class DataPlane:
    """Health, metadata and inference; the one handler shared by the REST and gRPC transports."""

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

    # -- health --------------------------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.repository.synced.is_set()

    def model_ready(self, model: str, version: str = "") -> bool:
        """True when loaded, False while loading; raises NotFound for unknown models."""
        try:
            self.repository.get(model, version or None)
        except Unavailable:
            return False
        return True

    # -- metadata ------------------------------------------------------------------------------------
    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, __version__, list(EXTENSIONS))

    def model_metadata(self, model: str, version: str = "") -> ModelMetadata:
        loaded = self.repository.get(model, version or None)
        return ModelMetadata(
            name=loaded.model,
            versions=[loaded.version] if version else self.repository.versions_of(model),
            platform=PLATFORM,
            inputs=[TensorMetadata(loaded.input_name, "FP32", [-1, loaded.n_features or -1])],
            outputs=[TensorMetadata(loaded.output_name, "FP32", [-1, loaded.n_outputs or -1])],
        )

    # -- inference -----------------------------------------------------------------------------------
    async def infer(self, request: InferRequest) -> InferResponse:
        loaded = self.repository.get(request.model, request.version or None)
        rows = check_inputs(loaded, request.inputs)
        for name in request.outputs:
            if name != loaded.output_name:
                raise InvalidArgument(
                    f"unknown output '{name}' for model '{loaded.model}' (outputs: {loaded.output_name})",
                    field=name,
                )
        try:
            result = await loaded.batcher.submit(rows)
        except Exception:
            metrics.INFER_REQUESTS.labels(loaded.model, loaded.version, "error").inc()
            raise
        metrics.INFER_REQUESTS.labels(loaded.model, loaded.version, "ok").inc()
        return InferResponse(
            model=loaded.model,
            version=loaded.version,
            id=request.id,
            outputs=[Tensor(loaded.output_name, "FP32", np.asarray(result, dtype=np.float32))],
        )


def check_inputs(loaded: LoadedVersion, inputs: list[Tensor]) -> np.ndarray:
    """The one input the version takes, as float32 ``[N, F]``; anything else is an InvalidArgument."""
    name = loaded.input_name
    by_name = {t.name: t for t in inputs}
    unknown = [n for n in by_name if n != name]
    if unknown:
        raise InvalidArgument(
            f"unexpected input '{unknown[0]}' for model '{loaded.model}' (inputs: {name})", field=unknown[0]
        )
    tensor = by_name.get(name)
    if tensor is None:
        raise InvalidArgument(f"missing input '{name}' for model '{loaded.model}'", field=name)
    if tensor.datatype != "FP32":
        raise InvalidArgument(f"input '{name}': datatype {tensor.datatype}, model expects FP32", field=name)
    shape = tensor.shape
    n_features = loaded.n_features
    if len(shape) != 2 or shape[0] < 1 or (n_features is not None and shape[1] != n_features):
        expected = f"[N, {n_features}]" if n_features is not None else "[N, F]"
        raise InvalidArgument(f"input '{name}': shape {shape}, model expects {expected} with N >= 1", field=name)
    return tensor.array
