"""Tensor codec of the Open Inference Protocol: V2 datatypes <-> numpy, for JSON ``data`` lists and for
raw little-endian bytes (the HTTP binary tensor extension and gRPC ``raw_*_contents``).

BYTES tensors travel as raw bytes in Triton's layout: each element is a 4-byte little-endian length
followed by its bytes. Every decoding error is an :class:`InvalidArgument` naming the tensor.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np

from mlops.errors import InvalidArgument

#: V2 datatype -> numpy dtype (little-endian; BYTES elements are Python ``bytes`` in an object array).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}


_NAMES: dict[np.dtype[Any], str] = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}


def datatype_of(array: np.ndarray) -> str:
    """The V2 datatype of ``array``."""
    name = _NAMES.get(array.dtype)
    if name is not None:
        return name
    if array.dtype == np.object_ or array.dtype.kind in ("S", "U"):
        return "BYTES"
    for name, dtype in DATATYPES.items():
        if name != "BYTES" and array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            return name
    raise InvalidArgument(f"numpy dtype {array.dtype} has no V2 datatype")


def numpy_dtype(datatype: str, name: str) -> np.dtype[Any]:
    try:
        return DATATYPES[datatype]
    except KeyError:
        raise InvalidArgument(
            f"tensor '{name}': unsupported datatype '{datatype}' (expected one of {', '.join(DATATYPES)})",
            field=name,
        ) from None


_INT_ONLY = {int}


def check_shape(shape: Sequence[Any], name: str) -> tuple[int, ...]:
    """A shape as a tuple of non-negative ints (the type test runs at C speed: it is on every request)."""
    dims = tuple(shape)
    if dims and (not set(map(type, dims)) <= _INT_ONLY or min(dims) < 0):  # bool is its own type: refused
        raise InvalidArgument(f"tensor '{name}': shape {list(shape)} must be non-negative integers", field=name)
    return dims


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _flatten(data: Any) -> list[Any]:
    """JSON ``data`` may be flat or nested row-major; flatten it (type checks at C speed: ``set(map(type))``)."""
    if not isinstance(data, list):
        return [data]
    while True:
        types = set(map(type, data))
        if list not in types:
            return data
        if types != {list}:
            break  # scalars beside lists: the general walk below
        data = list(chain.from_iterable(data))
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


# -- JSON ------------------------------------------------------------------------------------------------
def from_json(name: str, datatype: str, shape: Sequence[Any], data: Any) -> np.ndarray:
    """A JSON tensor (``data`` flat or nested) as a numpy array of ``shape``."""
    dtype = numpy_dtype(datatype, name)
    dims = check_shape(shape, name)
    flat = _flatten(data)
    if len(flat) != element_count(dims):
        raise InvalidArgument(
            f"tensor '{name}': shape {list(dims)} needs {element_count(dims)} elements, got {len(flat)}",
            field=name,
        )
    if datatype == "BYTES":
        out = np.empty(len(flat), dtype=np.object_)
        for i, item in enumerate(flat):
            if isinstance(item, str):
                out[i] = item.encode()
            elif isinstance(item, bytes):
                out[i] = item
            else:
                raise InvalidArgument(f"tensor '{name}': BYTES elements must be strings", field=name)
        return out.reshape(dims)
    types = set(map(type, flat))
    if datatype == "BOOL":
        if not types <= {bool}:
            raise InvalidArgument(f"tensor '{name}': BOOL elements must be true/false", field=name)
    elif not types <= {int, float}:  # bool is its own type here, so true/false are refused
        raise InvalidArgument(f"tensor '{name}': {datatype} elements must be numbers", field=name)
    elif dtype.kind in "iu" and float in types and not all(x.is_integer() for x in flat if type(x) is float):
        raise InvalidArgument(f"tensor '{name}': {datatype} elements must be integers", field=name)
    try:
        return np.asarray(flat, dtype=dtype).reshape(dims)
    except (OverflowError, ValueError) as exc:
        raise InvalidArgument(f"tensor '{name}': {exc}", field=name) from exc


def to_json(array: np.ndarray) -> tuple[str, list[int], list[Any]]:
    """``(datatype, shape, flat data)`` for a JSON response tensor."""
    datatype = datatype_of(array)
    flat = array.reshape(-1)
    if datatype == "BYTES":
        data: list[Any] = [_text(x) for x in flat]
    else:
        data = flat.tolist()
    return datatype, list(array.shape), data


def _text(item: Any) -> str:
    if isinstance(item, bytes | bytearray):
        return bytes(item).decode("utf-8", errors="replace")
    return str(item)


# -- raw bytes -------------------------------------------------------------------------------------------
def from_raw(name: str, datatype: str, shape: Sequence[Any], raw: bytes | memoryview) -> np.ndarray:
    """Raw little-endian bytes (or Triton's length-prefixed BYTES layout) as a numpy array of ``shape``."""
    dtype = numpy_dtype(datatype, name)
    dims = check_shape(shape, name)
    count = element_count(dims)
    if datatype == "BYTES":
        items = deserialize_bytes(name, raw)
        if len(items) != count:
            raise InvalidArgument(
                f"tensor '{name}': shape {list(dims)} needs {count} elements, got {len(items)}", field=name
            )
        out = np.empty(count, dtype=np.object_)
        out[:] = items
        return out.reshape(dims)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"tensor '{name}': shape {list(dims)} of {datatype} needs {expected} bytes, got {len(raw)}",
            field=name,
        )
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


def to_raw(array: np.ndarray) -> bytes:
    """The array as raw bytes: row-major little-endian, or length-prefixed elements for BYTES."""
    datatype = datatype_of(array)
    if datatype == "BYTES":
        return serialize_bytes(array)
    dtype = DATATYPES[datatype]
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def serialize_bytes(array: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for item in array.reshape(-1):
        b = item if isinstance(item, bytes | bytearray) else str(item).encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(bytes(b))
    return b"".join(parts)


def deserialize_bytes(name: str, raw: bytes | memoryview) -> list[bytes]:
    view = memoryview(raw)
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidArgument(f"tensor '{name}': truncated BYTES length prefix", field=name)
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidArgument(f"tensor '{name}': BYTES element runs past the data", field=name)
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return items
