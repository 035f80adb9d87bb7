"""The environment a run records: code version (git commit, uncommitted changes and their hash), Python,
installed packages.

Without git (a container image built without ``.git``) the code version is ``source:<sha256>`` over the
platform's own source files, so a run still names the code that made it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlops.settings import REPO_ROOT

log = logging.getLogger(__name__)

#: Untracked files bigger than this are hashed by size and name only (a stray dataset must not stall a job).
MAX_UNTRACKED_BYTES = 8 * 1024 * 1024
SOURCE_DIRS = ("services", "libs/mlops", "proto")
SOURCE_SUFFIXES = (".py", ".proto", ".yaml", ".yml", ".toml")


@dataclass(frozen=True, slots=True)
class CodeVersion:
    commit: str  # git HEAD, or source:<sha256> without git; empty only when neither is possible
    dirty: bool
    diff_sha256: str = ""  # sha256 of the uncommitted changes (tracked diff + untracked files), when dirty


def _git(args: list[str], cwd: Path) -> bytes | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("git %s failed: %s", " ".join(args), exc)
        return None
    return out.stdout


def _diff_hash(root: Path) -> str:
    """sha256 over ``git diff HEAD`` and every untracked (not ignored) file's name and bytes."""
    h = hashlib.sha256()
    h.update(_git(["diff", "HEAD", "--binary"], root) or b"")
    untracked = (_git(["ls-files", "--others", "--exclude-standard", "-z"], root) or b"").split(b"\0")
    for name in sorted(n for n in untracked if n):
        path = root / name.decode(errors="surrogateescape")
        h.update(b"\0untracked\0" + name + b"\0")
        try:
            size = path.stat().st_size
            h.update(path.read_bytes() if size <= MAX_UNTRACKED_BYTES else f"size={size}".encode())
        except OSError:
            h.update(b"unreadable")
    return h.hexdigest()


def source_hash(root: Path = REPO_ROOT) -> str:
    """sha256 over the platform's source files (path and bytes), generated protobuf code excluded."""
    h = hashlib.sha256()
    for top in SOURCE_DIRS:
        base = root / top
        if not base.exists():
            continue
        for path in sorted(p for p in base.rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES):
            rel = path.relative_to(root).as_posix()
            if "/v1/" in rel and rel.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")):
                continue
            h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def code_version(root: Path = REPO_ROOT) -> CodeVersion:
    """HEAD's commit, whether the tree has changes and a hash of them; without git, a hash of the source."""
    head = _git(["rev-parse", "HEAD"], root)
    if head is None:
        return CodeVersion(f"source:{source_hash(root)[:40]}", False)
    status = _git(["status", "--porcelain"], root)
    dirty = bool(status and status.strip())
    return CodeVersion(head.decode().strip(), dirty, _diff_hash(root) if dirty else "")


@functools.cache
def python_version() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


def pip_freeze() -> str:
    """Installed distributions as ``name==version`` lines, sorted (what ``pip freeze`` lists, without pip)."""
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    return "\n".join(seen[k] for k in sorted(seen))
