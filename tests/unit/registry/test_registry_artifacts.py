"""Content-addressed artifacts: layout, dedup, and verification on every read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlops.errors import NotFound
from services.registry.artifacts import ArtifactCorrupt, ArtifactStore


def test_put_lays_out_by_sha_and_reads_back(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    data = b"model bytes" * 1000
    sha = store.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "artifacts" / sha[:2] / sha).read_bytes() == data
    assert store.get(sha) == data
    assert b"".join(store.chunks(sha, size=1000)) == data
    assert store.put(data) == sha  # same bytes, one copy
    assert len(list((tmp_path / "artifacts").rglob("*"))) == 2  # the folder and the file


def test_tampered_bytes_are_never_served(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    sha = store.put(b"good bytes")
    store.path(sha).write_bytes(b"evil bytes")
    with pytest.raises(ArtifactCorrupt):
        store.get(sha)
    with pytest.raises(ArtifactCorrupt):
        next(store.chunks(sha))


def test_put_repairs_a_corrupt_copy(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    sha = store.put(b"good bytes")
    store.path(sha).write_bytes(b"rot")
    store.put(b"good bytes")
    assert store.get(sha) == b"good bytes"


def test_missing_and_malformed_ids_are_not_found(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(NotFound):
        store.get("0" * 64)
    with pytest.raises(NotFound):
        store.get("../../etc/passwd")
