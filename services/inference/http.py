"""REST transport of the Open Inference Protocol (KServe V2) under ``/v2``, with the binary tensor
extension: a body of a JSON header (``Inference-Header-Content-Length`` bytes) followed by raw tensors,
as ``tritonclient.http`` sends and expects it.

Errors follow the V2 protocol (``{"error": "<message>"}``, plus the platform's ``code`` and ``field``) rather
than the platform's ``{"error": {...}}``: tritonclient.http reads ``error`` as a string.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, ValidationError

from mlops.errors import InvalidArgument, MlopsError, TooLarge
from services.inference import codec
from services.inference.core import DataPlane, InferRequest, InferResponse, ModelMetadata, Tensor

HEADER_LENGTH = "Inference-Header-Content-Length"


class TensorMetadataModel(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadataModel]
    outputs: list[TensorMetadataModel]


class ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str]


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequestModel(BaseModel):
    """The JSON part of a V2 inference request."""

    id: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput]
    outputs: list[RequestOutput] = Field(default_factory=list)


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined (OpenAPI cannot resolve ``#/$defs`` refs)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


_INFER_DOC = {
    "requestBody": {
        "content": {
            "application/json": {"schema": _inline_schema(InferenceRequestModel)},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
        "required": True,
    }
}


#: zlib's window bits per Content-Encoding: gzip's header and trailer, or the zlib format HTTP calls deflate.
_WBITS = {"gzip": 31, "deflate": 15}
#: How much is inflated per step: a bound on what one step holds before the size is checked again.
_INFLATE_STEP = 1024 * 1024


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body decoded from its Content-Encoding (gzip, deflate; anything else as it came), inflated step by
    step and stopped as soon as it passes ``limit`` bytes (:class:`TooLarge`): a few hundred KiB that
    inflate to hundreds of MiB are refused after ``limit``, not inflated whole. Concatenated gzip members
    are read as one body, as ``gzip.decompress`` reads them."""
    wbits = _WBITS.get((encoding or "").strip().lower())
    if wbits is None:
        return body
    out: list[bytes] = []
    size = 0
    pending = body
    try:
        while True:
            inflater = zlib.decompressobj(wbits)
            data = pending
            while not inflater.eof:
                piece = inflater.decompress(data, _INFLATE_STEP)
                size += len(piece)
                if size > limit:
                    raise TooLarge(f"the {encoding} body inflates past {limit} bytes", field="body")
                out.append(piece)
                data = inflater.unconsumed_tail
                if not data and not piece:
                    break
            if not inflater.eof:
                raise InvalidArgument(f"the {encoding} body is truncated", field="Content-Encoding")
            pending = inflater.unused_data
            if wbits != _WBITS["gzip"] or not pending.strip(b"\0"):
                break
    except zlib.error as exc:
        raise InvalidArgument(f"body is not valid {encoding}: {exc}", field="Content-Encoding") from None
    return b"".join(out)


def parse_infer_body(
    model: str, version: str, body: bytes, header_length: str | None
) -> tuple[InferRequest, InferenceRequestModel]:
    """Split the body into its JSON header and binary section and decode every input tensor."""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise InvalidArgument(f"{HEADER_LENGTH} must be an integer", field=HEADER_LENGTH) from None
        if not 0 <= split <= len(body):
            raise InvalidArgument(f"{HEADER_LENGTH} {split} is outside the body", field=HEADER_LENGTH)
        header, binary = body[:split], memoryview(body)[split:]
    else:
        header, binary = body, memoryview(b"")
    try:
        doc = InferenceRequestModel.model_validate_json(header)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or None
        raise InvalidArgument(f"invalid inference request: {first.get('msg')}", field=field) from None
    tensors: list[Tensor] = []
    offset = 0
    for item in doc.inputs:
        size = item.parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidArgument(f"input '{item.name}': binary_data_size runs past the body", field=item.name)
            array = codec.from_raw(item.name, item.datatype, item.shape, binary[offset : offset + size])
            offset += size
        elif item.data is not None:
            array = codec.from_json(item.name, item.datatype, item.shape, item.data)
        else:
            raise InvalidArgument(f"input '{item.name}' has neither data nor binary_data_size", field=item.name)
        tensors.append(Tensor(item.name, item.datatype, array))
    request = InferRequest(
        model=model,
        version=version,
        id=doc.id,
        inputs=tensors,
        outputs=[o.name for o in doc.outputs],
        parameters=doc.parameters,
    )
    return request, doc


def render_infer_response(response: InferResponse, doc: InferenceRequestModel) -> Response:
    """JSON, or the JSON header plus raw tensors when the request asked for binary outputs."""
    default_binary = bool(doc.parameters.get("binary_data_output", False))
    wants = {o.name: bool(o.parameters.get("binary_data", default_binary)) for o in doc.outputs}
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if wants.get(tensor.name, default_binary):
            raw = codec.to_raw(tensor.array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = codec.to_json(tensor.array)[2]
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": response.model, "model_version": response.version, "outputs": outputs}
    if response.id:
        body["id"] = response.id
    if response.parameters:
        body["parameters"] = response.parameters
    header = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        b"".join([header, *blobs]),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def _metadata(meta: ModelMetadata) -> ModelMetadataResponse:
    return ModelMetadataResponse(
        name=meta.name,
        versions=meta.versions,
        platform=meta.platform,
        inputs=[TensorMetadataModel(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
        outputs=[TensorMetadataModel(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
    )


def v2_error(exc: MlopsError) -> JSONResponse:
    """The V2 protocol's error body: ``error`` is the message (a string: tritonclient.http formats it as one
    and fails on anything else), with the platform's ``code`` and ``field`` beside it."""
    body: dict[str, str] = {"error": exc.message, "code": exc.code}
    if exc.field:
        body["field"] = exc.field
    return JSONResponse(body, status_code=exc.http_status)


class V2Route(APIRoute):
    """Routes under ``/v2`` answer errors in the V2 shape instead of the platform's ``{"error": {...}}``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except MlopsError as exc:
                return v2_error(exc)

        return route


def router(plane: DataPlane, max_body_bytes: int) -> APIRouter:
    api = APIRouter(prefix="/v2", tags=["inference"], route_class=V2Route)

    @api.get("/health/live")
    async def live() -> JSONResponse:
        return JSONResponse({"live": plane.live()}, status_code=200)

    @api.get("/health/ready")
    async def ready() -> JSONResponse:
        ok = plane.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @api.get("")
    async def server_metadata() -> ServerMetadataResponse:
        meta = plane.server_metadata()
        return ServerMetadataResponse(name=meta.name, version=meta.version, extensions=meta.extensions)

    @api.get("/models/{name}")
    async def model_metadata(name: str) -> ModelMetadataResponse:
        return _metadata(plane.model_metadata(name))

    @api.get("/models/{name}/versions/{version}")
    async def model_version_metadata(name: str, version: str) -> ModelMetadataResponse:
        return _metadata(plane.model_metadata(name, version))

    async def _ready(name: str, version: str) -> JSONResponse:
        state = plane.model_state(name, version)
        body: dict[str, Any] = {"name": name, "ready": state == "ready"}
        if version:
            body["version"] = version
        # V2: 200 means ready, a 4xx means not: 409 while loading, 404 when unknown.
        return JSONResponse(body, status_code={"ready": 200, "loading": 409}.get(state, 404))

    @api.get("/models/{name}/ready")
    async def model_ready(name: str) -> JSONResponse:
        return await _ready(name, "")

    @api.get("/models/{name}/versions/{version}/ready")
    async def model_version_ready(name: str, version: str) -> JSONResponse:
        return await _ready(name, version)

    async def _infer(name: str, version: str, request: Request) -> Response:
        body = inflate(await request.body(), request.headers.get("content-encoding"), max_body_bytes)
        infer_request, doc = parse_infer_body(name, version, body, request.headers.get(HEADER_LENGTH))
        return render_infer_response(await plane.infer(infer_request), doc)

    @api.post("/models/{name}/infer", openapi_extra=_INFER_DOC)
    async def infer(name: str, request: Request) -> Response:
        return await _infer(name, "", request)

    @api.post("/models/{name}/versions/{version}/infer", openapi_extra=_INFER_DOC)
    async def infer_version(name: str, version: str, request: Request) -> Response:
        return await _infer(name, version, request)

    return api
