"""A compressed inference body is inflated step by step up to the body limit: a bomb is refused (413) after
the limit, not inflated whole; ordinary gzip and deflate bodies (concatenated gzip members too) read as
before, and a broken one is a 400."""

from __future__ import annotations

import gzip
import zlib

import pytest

from mlops.errors import InvalidArgument, TooLarge
from services.inference.http import inflate

MIB = 1024 * 1024


def _bomb(size: int, wbits: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return b"".join([packer.compress(b"\0" * MIB) for _ in range(size // MIB)] + [packer.flush()])


@pytest.mark.parametrize(("encoding", "wbits"), [("gzip", 31), ("deflate", 15), ("GZIP", 31)])
def test_a_bomb_is_refused_once_past_the_limit(encoding: str, wbits: int) -> None:
    body = _bomb(256 * MIB, wbits)
    assert len(body) < MIB
    with pytest.raises(TooLarge):
        inflate(body, encoding, 8 * MIB)


@pytest.mark.parametrize("size", [0, 1, 8 * MIB])
def test_bodies_up_to_the_limit_inflate_whole(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert inflate(gzip.compress(data), "gzip", 8 * MIB) == data
    assert inflate(zlib.compress(data), "deflate", 8 * MIB) == data


def test_one_byte_past_the_limit_is_too_large() -> None:
    with pytest.raises(TooLarge):
        inflate(gzip.compress(b"a" * (MIB + 1)), "gzip", MIB)


def test_concatenated_gzip_members_read_as_one_body() -> None:
    body = gzip.compress(b"hello ") + gzip.compress(b"world")
    assert inflate(body, "gzip", 100) == gzip.decompress(body) == b"hello world"
    with pytest.raises(TooLarge):
        inflate(gzip.compress(b"a" * 60) + gzip.compress(b"b" * 60), "gzip", 100)


@pytest.mark.parametrize("encoding", [None, "", "identity", "br"])
def test_other_encodings_pass_through(encoding: str | None) -> None:
    assert inflate(b"raw", encoding, 1) == b"raw"


@pytest.mark.parametrize(("body", "encoding"), [
    (gzip.compress(b"x" * 1000)[:20], "gzip"),  # truncated
    (b"not gzip at all", "gzip"),
    (b"not zlib either", "deflate"),
])
def test_a_broken_body_is_400(body: bytes, encoding: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        inflate(body, encoding, MIB)
    assert err.value.field == "Content-Encoding"
