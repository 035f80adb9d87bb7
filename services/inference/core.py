"""The data plane every transport ends in (REST, gRPC): health, metadata and inference on loaded versions.

Transports decode wire tensors with :mod:`services.inference.codec` into :class:`Tensor` objects and
call :class:`DataPlane`; it checks them against the version's signature (one FP32 input ``[N, F]``),
runs them through the version's dynamic batcher and returns the output tensors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from opentelemetry import context as otel_context

from mlops import __version__
from mlops.errors import InvalidArgument, NotFound, Unavailable
from services.inference.prediction_log import Entry, PredictionLog, new_prediction_id
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
    #: request parameters (prediction log context: ``prediction_log``, ``prediction_id``, ``endpoint``...).
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferResponse:
    model: str
    version: str
    id: str
    outputs: list[Tensor]
    #: response parameters: ``prediction_id`` when the prediction was logged.
    parameters: dict[str, Any] = field(default_factory=dict)


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

    def __init__(self, repository: ModelRepository, prediction_log: PredictionLog | None = None) -> None:
        self.repository = repository
        self.prediction_log = prediction_log

    # -- health --------------------------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.repository.synced.is_set()

    def model_state(self, model: str, version: str = "") -> str:
        """``ready``, ``loading`` or ``unknown``."""
        try:
            self.repository.get(model, version or None)
        except Unavailable:
            return "loading"
        except NotFound:
            return "unknown"
        return "ready"

    def model_ready(self, model: str, version: str = "") -> bool:
        """True when loaded; False while loading or when unknown (as Triton answers ModelReady)."""
        return self.model_state(model, version) == "ready"

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
        start = time.perf_counter()
        # From here to submit() nothing awaits: the version resolved is the one the request is queued on,
        # even if a sync swaps the mapping meanwhile (an unloading version finishes its queue first).
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
            loaded.failed.inc()
            raise
        loaded.ok.inc()
        response = InferResponse(
            model=loaded.model,
            version=loaded.version,
            id=request.id,
            outputs=[Tensor(loaded.output_name, "FP32", result)],
        )
        log = self.prediction_log
        if log is not None and request.parameters.get("prediction_log", True) is not False:
            prediction_id = str(request.parameters.get("prediction_id") or new_prediction_id())
            recorded = log.record(Entry(
                prediction_id=prediction_id,
                model=loaded.model,
                version=loaded.version,
                features=loaded.features,
                inputs=rows,
                outputs=result,
                latency_ms=(time.perf_counter() - start) * 1000.0,
                time_ns=time.time_ns(),
                context=otel_context.get_current(),
                parameters=request.parameters,
            ))
            if not recorded:
                # An answer whose record would be dropped is an answered prediction nobody can audit, join
                # to its outcome or learn from: refuse it instead (the caller retries; the router's outbox
                # answers the same way when full).
                raise Unavailable(
                    f"{log.buffered_rows} prediction records are waiting for the broker; not answering more "
                    "until they are sent")
            response.parameters["prediction_id"] = prediction_id
        return response


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
