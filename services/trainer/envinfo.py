"""The environment a run records: code version (git commit, uncommitted changes), Python, hardware."""

from __future__ import annotations

import functools
import logging
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlops.settings import REPO_ROOT

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CodeVersion:
    commit: str  # empty when unknown
    dirty: bool


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("git %s failed: %s", " ".join(args), exc)
        return None
    return out.stdout


def code_version(root: Path = REPO_ROOT) -> CodeVersion:
    """HEAD's commit and whether the working tree has changes; no git or no repo gives ("", False)."""
    head = _git(["rev-parse", "HEAD"], root)
    if head is None:
        return CodeVersion("", False)
    status = _git(["status", "--porcelain"], root)
    return CodeVersion(head.strip(), bool(status and status.strip()))


@functools.cache
def python_version() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"
