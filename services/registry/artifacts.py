"""Content-addressed artifact store: bytes live at ``<root>/<sha[:2]>/<sha>`` and are verified on every read.

A file whose bytes no longer hash to its name is never served: reading it raises :class:`ArtifactCorrupt`.
Writes go to a temporary file that is renamed into place, so a crash never leaves a partial artifact.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc

from mlops.errors import MlopsError, NotFound

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK_BYTES = 1024 * 1024


class ArtifactCorrupt(MlopsError):
    """Stored bytes do not match their sha256: a storage fault, never the caller's."""

    http_status = 500
    grpc_code = grpc.StatusCode.DATA_LOSS
    code = "artifact_corrupt"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Immutable blobs keyed by their sha256 under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha: str) -> Path:
        if not _SHA256.match(sha or ""):
            raise NotFound(f"no artifact {sha!r}", field="artifact_sha256")
        return self.root / sha[:2] / sha

    def put(self, data: bytes) -> str:
        """Store ``data``; returns its sha256. Storing the same bytes twice keeps one copy."""
        sha = sha256_hex(data)
        target = self.path(sha)
        if target.exists() and self._verified(target, sha):
            return sha
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{sha[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha

    def get(self, sha: str) -> bytes:
        """The bytes stored under ``sha``, after checking they still hash to it."""
        target = self.path(sha)
        try:
            data = target.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"artifact {sha} is missing from the store", field="artifact_sha256") from exc
        actual = sha256_hex(data)
        if actual != sha:
            raise ArtifactCorrupt(f"artifact {sha} is corrupt: its bytes hash to {actual}")
        return data

    def chunks(self, sha: str, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The verified bytes in chunks (verification happens before the first chunk)."""
        data = self.get(sha)
        for start in range(0, len(data), size):
            yield data[start : start + size]

    def exists(self, sha: str) -> bool:
        return self.path(sha).exists()

    @staticmethod
    def _verified(path: Path, sha: str) -> bool:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(CHUNK_BYTES), b""):
                h.update(block)
        return h.hexdigest() == sha
