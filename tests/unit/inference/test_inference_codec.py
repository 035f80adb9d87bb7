"""Round-trips of the V2 tensor codec for every datatype: JSON data, raw bytes and gRPC typed contents."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from mlops.errors import InvalidArgument
from services.inference import codec
from services.inference.grpc_api import contents_from_array, tensor_from_contents

SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "INT8": np.array([[-128, 0, 127]], dtype=np.int8),
    "INT16": np.array([[-32768, 1, 32767]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1], [1, 2, 3]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1]], dtype=np.int64),
    "UINT8": np.array([[0, 255]], dtype=np.uint8),
    "UINT16": np.array([[0, 65535]], dtype=np.uint16),
    "UINT32": np.array([[0, 2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array([[0, 2**64 - 1]], dtype=np.uint64),
    "FP16": np.array([[0.5, -1.25, 65504.0]], dtype=np.float16),
    "FP32": np.array([[0.1, -2.5, 3.0e38], [1.0, 2.0, 3.0]], dtype=np.float32),
    "FP64": np.array([[0.1, -2.5e300, np.pi]], dtype=np.float64),
    "BYTES": np.array([[b"abc", b"", "h\u00e9llo".encode()]], dtype=np.object_),
}


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_raw_round_trip(datatype: str) -> None:
    array = SAMPLES[datatype]
    assert codec.datatype_of(array) == datatype
    raw = codec.to_raw(array)
    back = codec.from_raw("t", datatype, list(array.shape), raw)
    assert back.shape == array.shape
    assert back.dtype == codec.DATATYPES[datatype]
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_json_round_trip(datatype: str) -> None:
    array = SAMPLES[datatype]
    dt, shape, data = codec.to_json(array)
    assert (dt, shape) == (datatype, list(array.shape))
    back = codec.from_json("t", dt, shape, data)
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("datatype", [d for d in SAMPLES if d != "FP16"])
def test_grpc_contents_round_trip(datatype: str) -> None:
    array = SAMPLES[datatype]
    back = tensor_from_contents("t", datatype, list(array.shape), contents_from_array(array))
    np.testing.assert_array_equal(back, array)


def test_bytes_layout_matches_tritonclient() -> None:
    array = SAMPLES["BYTES"]
    assert codec.to_raw(array) == serialize_byte_tensor(array).item()
    decoded = deserialize_bytes_tensor(codec.to_raw(array))
    assert list(decoded) == list(array.reshape(-1))


def test_json_accepts_nested_and_flat_data() -> None:
    flat = codec.from_json("x", "FP32", [2, 2], [1, 2, 3, 4])
    nested = codec.from_json("x", "FP32", [2, 2], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(flat, nested)


@pytest.mark.parametrize(
    ("datatype", "shape", "data"),
    [
        ("FP32", [2, 2], [1, 2, 3]),  # wrong element count
        ("FP99", [1], [1]),  # unknown datatype
        ("INT32", [1], [1.5]),  # fraction in an int tensor
        ("BOOL", [1], [1]),  # not a boolean
        ("FP32", [1], ["a"]),  # not a number
        ("INT8", [1], [1000]),  # out of range
        ("FP32", [-1], [1]),  # negative dimension
    ],
)
def test_json_errors_name_the_tensor(datatype: str, shape: list[int], data: list[object]) -> None:
    with pytest.raises(InvalidArgument) as info:
        codec.from_json("my_input", datatype, shape, data)
    assert info.value.field == "my_input"
    assert "my_input" in info.value.message


def test_raw_size_mismatch_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="needs 16 bytes"):
        codec.from_raw("x", "FP32", [2, 2], b"\x00" * 12)
    with pytest.raises(InvalidArgument, match="truncated"):
        codec.from_raw("x", "BYTES", [1], b"\x01\x00")
    with pytest.raises(InvalidArgument, match="runs past"):
        codec.from_raw("x", "BYTES", [1], b"\x05\x00\x00\x00ab")


def test_fp16_has_no_typed_contents() -> None:
    with pytest.raises(InvalidArgument, match="raw_input_contents"):
        tensor_from_contents("x", "FP16", [1], contents_from_array(np.array([1], dtype=np.int32)))
