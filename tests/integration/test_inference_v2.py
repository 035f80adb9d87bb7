"""The Open Inference Protocol against the real stack, with unmodified tritonclient (http and grpc): health,
metadata, inference with FP32 batches (JSON, binary tensors, gRPC raw and typed contents), and refusals of a
wrong shape and a wrong datatype with clear messages."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.integration.inference_support import FEATURES, expected, headers, metadata, register, wait_for
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

TAG = 7.0


@pytest.fixture(scope="module")
def served(stack: Stack) -> tuple[str, str]:
    """A model registered in production and loaded by inference: ``(model, version)``."""
    model = f"v2-{uuid.uuid4().hex[:8]}"
    version = register(stack.grpc("registry"), model, TAG).version
    client = thttp.InferenceServerClient(stack.url("inference").removeprefix("http://"))
    wait_for("inference to load the model", lambda: client.is_model_ready(model, version, headers=headers()))
    return model, version


@pytest.fixture
def http(stack: Stack) -> thttp.InferenceServerClient:
    return thttp.InferenceServerClient(stack.url("inference").removeprefix("http://"))


@pytest.fixture
def grpcc(stack: Stack) -> tgrpc.InferenceServerClient:
    return tgrpc.InferenceServerClient(stack.grpc("inference"))


def batch(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, len(FEATURES))).astype(np.float32)


def test_health_and_metadata_over_http(http: thttp.InferenceServerClient, served: tuple[str, str]) -> None:
    model, version = served
    assert http.is_server_live() and http.is_server_ready()
    meta = http.get_server_metadata(headers=headers())
    assert meta["name"] == "mlops-inference" and "binary_tensor_data" in meta["extensions"]
    assert http.is_model_ready(model, headers=headers()) and http.is_model_ready(model, version, headers=headers())
    mm = http.get_model_metadata(model, version, headers=headers())
    assert mm["name"] == model and mm["versions"] == [version]
    assert mm["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, len(FEATURES)]}]
    assert mm["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 2]}]
    with pytest.raises(InferenceServerException) as err:
        http.get_model_metadata(f"missing-{model}", headers=headers())
    assert err.value.status() == "404"


def test_health_and_metadata_over_grpc(grpcc: tgrpc.InferenceServerClient, served: tuple[str, str]) -> None:
    model, version = served
    assert grpcc.is_server_live() and grpcc.is_server_ready()
    meta = grpcc.get_server_metadata(headers=headers())
    assert meta.name == "mlops-inference"
    assert grpcc.is_model_ready(model, headers=headers()) and grpcc.is_model_ready(model, version, headers=headers())
    mm = grpcc.get_model_metadata(model, version, headers=headers())
    assert mm.name == model and list(mm.versions) == [version]
    assert [(t.name, t.datatype, list(t.shape)) for t in mm.inputs] == [("input", "FP32", [-1, len(FEATURES)])]
    with pytest.raises(InferenceServerException) as err:
        grpcc.get_model_metadata(f"missing-{model}", headers=headers())
    assert err.value.status() == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_http_infer_fp32_batch(http: thttp.InferenceServerClient, served: tuple[str, str], binary: bool) -> None:
    model, version = served
    x = batch(5, seed=1)
    inp = thttp.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = thttp.InferRequestedOutput("output", binary_data=binary)
    result = http.infer(model, [inp], outputs=[out], request_id="r-1", headers=headers())
    np.testing.assert_allclose(result.as_numpy("output"), expected(x, TAG), rtol=1e-5)
    response = result.get_response()
    assert response["model_name"] == model and response["model_version"] == version and response["id"] == "r-1"


def test_grpc_infer_fp32_batch_raw_contents(grpcc: tgrpc.InferenceServerClient, served: tuple[str, str]) -> None:
    model, version = served
    x = batch(7, seed=2)
    inp = tgrpc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # raw_input_contents
    result = grpcc.infer(model, [inp], model_version=version, headers=headers())
    np.testing.assert_allclose(result.as_numpy("output"), expected(x, TAG), rtol=1e-5)
    response = result.get_response()
    assert response.model_version == version and len(response.raw_output_contents) == 1


def test_grpc_infer_typed_contents(stack: Stack, served: tuple[str, str]) -> None:
    model, _ = served
    x = batch(3, seed=3)
    request = service_pb2.ModelInferRequest(model_name=model, inputs=[service_pb2.ModelInferRequest.InferInputTensor(
        name="input", datatype="FP32", shape=list(x.shape),
        contents=service_pb2.InferTensorContents(fp32_contents=x.reshape(-1).tolist()))])
    with grpc.insecure_channel(stack.grpc("inference")) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, metadata=metadata(), timeout=30)
    got = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(tuple(response.outputs[0].shape))
    np.testing.assert_allclose(got, expected(x, TAG), rtol=1e-5)


def test_http_refuses_wrong_shape_and_datatype(http: thttp.InferenceServerClient, served: tuple[str, str]) -> None:
    model, _ = served
    wide = np.ones((2, len(FEATURES) + 1), dtype=np.float32)
    inp = thttp.InferInput("input", list(wide.shape), "FP32")
    inp.set_data_from_numpy(wide)
    with pytest.raises(InferenceServerException) as err:
        http.infer(model, [inp], headers=headers())
    assert err.value.status() == "400"
    assert "input 'input': shape [2, 5], model expects [N, 4] with N >= 1" in str(err.value)

    doubles = np.ones((2, len(FEATURES)), dtype=np.float64)
    inp = thttp.InferInput("input", list(doubles.shape), "FP64")
    inp.set_data_from_numpy(doubles)
    with pytest.raises(InferenceServerException) as err:
        http.infer(model, [inp], headers=headers())
    assert err.value.status() == "400"
    assert "input 'input': datatype FP64, model expects FP32" in str(err.value)


def test_grpc_refuses_wrong_shape_and_datatype(grpcc: tgrpc.InferenceServerClient, served: tuple[str, str]) -> None:
    model, _ = served
    flat = np.ones((len(FEATURES),), dtype=np.float32)
    inp = tgrpc.InferInput("input", list(flat.shape), "FP32")
    inp.set_data_from_numpy(flat)
    with pytest.raises(InferenceServerException) as err:
        grpcc.infer(model, [inp], headers=headers())
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert err.value.message() == "input 'input': shape [4], model expects [N, 4] with N >= 1"

    ints = np.ones((2, len(FEATURES)), dtype=np.int32)
    inp = tgrpc.InferInput("input", list(ints.shape), "INT32")
    inp.set_data_from_numpy(ints)
    with pytest.raises(InferenceServerException) as err:
        grpcc.infer(model, [inp], headers=headers())
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert err.value.message() == "input 'input': datatype INT32, model expects FP32"


def test_unknown_model_and_version_are_not_found(grpcc: tgrpc.InferenceServerClient,
                                                 served: tuple[str, str]) -> None:
    model, _ = served
    inp = tgrpc.InferInput("input", [1, len(FEATURES)], "FP32")
    inp.set_data_from_numpy(batch(1))
    for name, version in ((f"missing-{model}", ""), (model, "999")):
        with pytest.raises(InferenceServerException) as err:
            grpcc.infer(name, [inp], model_version=version, headers=headers())
        assert err.value.status() == "StatusCode.NOT_FOUND"
