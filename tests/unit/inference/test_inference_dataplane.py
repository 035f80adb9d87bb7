"""The data plane and its REST/gRPC codecs, driven by tritonclient's own request/response code (no server).

A real TorchScript module is loaded from bytes, as the repository does, and installed as a version.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator

import numpy as np
import pytest
import torch
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.grpc import service_pb2
from tritonclient.http._utils import _get_inference_request

from mlops.errors import InvalidArgument, NotFound, Unavailable
from services.inference.batcher import DynamicBatcher
from services.inference.core import DataPlane
from services.inference.grpc_api import request_from_proto
from services.inference.http import parse_infer_body, render_infer_response
from services.inference.prediction_log import PredictionLog
from services.inference.repository import LoadedVersion, ModelRepository
from services.inference.runtime import Runtime, TorchScriptRuntime
from services.inference.settings import InferenceSettings

N_FEATURES, N_CLASSES = 4, 3


def _artifact(seed: int) -> bytes:
    torch.manual_seed(seed)
    module = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(N_FEATURES, N_CLASSES), torch.nn.Softmax(-1)))
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    return buf.getvalue()


def _loaded(version: str, stage: str, runtime: Runtime) -> LoadedVersion:
    batcher = DynamicBatcher(runtime.forward, max_batch_size=64, max_queue_delay_s=0.001, labels=("m", version))
    batcher.start()
    return LoadedVersion(
        model="m",
        version=version,
        stage=stage,
        sha256="0" * 64,
        input_name="input",
        output_name="output",
        features=("a", "b", "c", "d"),
        classes=("0", "1", "2"),
        n_outputs=N_CLASSES,
        runtime=runtime,
        batcher=batcher,
    )


@pytest.fixture
async def plane() -> AsyncIterator[DataPlane]:
    repo = ModelRepository(source=None, settings=InferenceSettings())  # type: ignore[arg-type]
    for version, stage, seed in (("1", "production", 1), ("2", "candidate", 2), ("10", "shadow", 3)):
        runtime = Runtime.for_format("torchscript").load(_artifact(seed), torch.device("cpu"))
        repo._install(_loaded(version, stage, runtime))
    yield DataPlane(repo)
    await repo.close()


def _expected(plane: DataPlane, version: str, x: np.ndarray) -> np.ndarray:
    return plane.repository.get("m", version).runtime.forward(x)


def test_torchscript_runtime_from_bytes() -> None:
    rt = TorchScriptRuntime.load(_artifact(0), torch.device("cpu"))
    x = np.frombuffer(np.ones((2, N_FEATURES), dtype=np.float32).tobytes(), dtype=np.float32).reshape(2, -1)
    out = rt.forward(x)  # read-only input, as decoded from request bytes
    assert out.shape == (2, N_CLASSES) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert rt.device == "cpu"


def test_default_version_is_production_else_highest(plane: DataPlane) -> None:
    assert plane.repository.get("m").version == "1"
    plane.repository.get("m", "1").stage = "archived"
    plane.repository._publish(plane.repository._versions)
    assert plane.repository.get("m").version == "10"
    with pytest.raises(NotFound):
        plane.repository.get("m", "7")
    with pytest.raises(NotFound):
        plane.repository.get("other")


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False, None])
async def test_http_wire_with_tritonclient(plane: DataPlane, binary_in: bool, binary_out: bool | None) -> None:
    x = np.random.default_rng(0).normal(size=(5, N_FEATURES)).astype(np.float32)
    inp = th.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    outputs = None if binary_out is None else [th.InferRequestedOutput("output", binary_data=binary_out)]
    body, json_size = _get_inference_request([inp], "rid", outputs, 0, False, False, 0, None, None)
    request, doc = parse_infer_body("m", "2", body, None if json_size is None else str(json_size))
    response = render_infer_response(await plane.infer(request), doc)
    header = response.headers.get("Inference-Header-Content-Length")
    result = th.InferResult.from_response_body(response.body, header_length=None if header is None else int(header))
    np.testing.assert_allclose(result.as_numpy("output"), _expected(plane, "2", x), rtol=1e-6)
    assert result.get_response()["model_version"] == "2"
    assert result.get_response()["id"] == "rid"
    assert (header is not None) == (binary_out is not False)


async def test_grpc_wire_with_tritonclient(plane: DataPlane) -> None:
    x = np.random.default_rng(1).normal(size=(3, N_FEATURES)).astype(np.float32)
    inp = tg.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    proto = service_pb2.ModelInferRequest(model_name="m", inputs=[inp._get_tensor()])
    proto.raw_input_contents.append(inp._get_content())
    response = await plane.infer(request_from_proto(proto))
    assert response.version == "1"
    np.testing.assert_allclose(response.outputs[0].array, _expected(plane, "1", x), rtol=1e-6)


@pytest.mark.parametrize(
    ("datatype", "shape", "message"),
    [("FP64", [2, 4], "datatype FP64"), ("FP32", [2, 3], "shape [2, 3]"), ("FP32", [8], "shape [8]")],
)
async def test_wrong_input_is_invalid_and_named(
    plane: DataPlane, datatype: str, shape: list[int], message: str
) -> None:
    n = int(np.prod(shape))
    doc = {"inputs": [{"name": "input", "datatype": datatype, "shape": shape, "data": list(range(n))}]}
    body = json.dumps(doc).encode()
    request, _ = parse_infer_body("m", "", body, None)
    with pytest.raises(InvalidArgument, match=re.escape(message)) as info:
        await plane.infer(request)
    assert info.value.field == "input"


async def test_unknown_input_and_output_names(plane: DataPlane) -> None:
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'
    with pytest.raises(InvalidArgument, match="unexpected input 'x'"):
        await plane.infer(parse_infer_body("m", "", body, None)[0])
    body = (
        b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}],"outputs":[{"name":"logits"}]}'
    )
    with pytest.raises(InvalidArgument, match="unknown output 'logits'"):
        await plane.infer(parse_infer_body("m", "", body, None)[0])


def test_bad_binary_header_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        parse_infer_body("m", "", b"{}", "100")
    body = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":16}}]}'
    with pytest.raises(InvalidArgument, match="runs past"):
        parse_infer_body("m", "", body + b"\x00" * 8, str(len(body)))


def test_metadata(plane: DataPlane) -> None:
    meta = plane.model_metadata("m")
    assert meta.versions == ["1", "2", "10"]
    assert meta.inputs[0].shape == [-1, N_FEATURES] and meta.outputs[0].shape == [-1, N_CLASSES]
    assert plane.model_ready("m", "2")
    assert not plane.model_ready("m", "7") and plane.model_state("m", "7") == "unknown"
    assert not plane.model_ready("other") and plane.model_state("m") == "ready"


async def test_a_full_prediction_log_refuses_the_answer(plane: DataPlane) -> None:
    """An answer whose record would be dropped is never given: 503/UNAVAILABLE, and the caller retries."""
    plane.prediction_log = PredictionLog(producer=None, max_rows=1)  # type: ignore[arg-type]  # never drained
    body = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'
    first = await plane.infer(parse_infer_body("m", "", body, None)[0])
    assert first.parameters["prediction_id"] and plane.prediction_log.buffered_rows == 1
    with pytest.raises(Unavailable, match="waiting for the broker"):
        await plane.infer(parse_infer_body("m", "", body, None)[0])
    unlogged = parse_infer_body("m", "", body.replace(b'"inputs"', b'"parameters":{"prediction_log":false},"inputs"'),
                                None)[0]
    assert (await plane.infer(unlogged)).outputs  # a caller that logs its own record is still answered
