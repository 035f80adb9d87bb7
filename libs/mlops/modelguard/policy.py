"""What services call: :class:`ModelPolicy` decides whether an artifact may run, before anything of it runs.

``check`` is the verdict on bytes: the static checks (:mod:`mlops.modelguard.archive`), then the graph walk
(:mod:`mlops.modelguard.graphs`) in a short-lived subprocess (:mod:`mlops.modelguard.worker`) so the
service process deserializes nothing it has not cleared; verdicts are remembered by sha256. ``load`` is
``check``, then ``torch.jit.load`` in this process, then the graph walk once more on the module that will
actually run. The registry calls ``check`` (it never imports torch); inference and the trainer call ``load``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from mlops.errors import InvalidArgument
from mlops.modelguard.archive import inspect_archive
from mlops.modelguard.ops import PURE_TENSOR_OPS, parse_extra_ops
from mlops.modelguard.refusal import ArtifactRefused, ArtifactUnreadable, Finding
from mlops.modelguard.worker import VERDICT

if TYPE_CHECKING:
    import torch

    from mlops.settings import PlatformSettings

log = logging.getLogger(__name__)

#: Environment variables the inspection subprocess keeps: enough to start Python and load torch's libraries,
#: nothing of the platform's (no tokens, no settings).
_KEPT_ENV = ("PATH", "LD_LIBRARY_PATH", "SYSTEMROOT", "LANG", "LC_ALL")
#: Formats the platform runs, and whether this policy inspects them.
INSPECTED_FORMATS = ("torchscript",)


class ModelPolicy:
    """The allowlist (the defaults plus an operator's ``extra_ops``) and the means to apply it."""

    def __init__(self, extra_ops: frozenset[str] = frozenset(), *, isolate: bool = True, timeout_s: float = 60.0,
                 max_parallel: int = 2, cache_size: int = 256) -> None:
        self.extra_ops = frozenset(extra_ops)
        self.allowed = PURE_TENSOR_OPS | self.extra_ops
        self.isolate = isolate
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max(1, max_parallel))
        self._verdicts: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> ModelPolicy:
        return cls(parse_extra_ops(settings.model_ops_allow), timeout_s=settings.model_inspect_timeout_s)

    # -- the verdict on bytes ----------------------------------------------------------------------------
    def check_artifact(self, artifact_format: str, data: bytes) -> None:
        """``check`` for a format the platform runs; a format this policy cannot inspect is refused."""
        fmt = (artifact_format or "torchscript").strip().lower()
        if fmt not in INSPECTED_FORMATS:
            raise InvalidArgument(f"artifact_format {artifact_format!r} cannot be inspected; expected one of "
                                  f"{', '.join(INSPECTED_FORMATS)}", field="artifact_format")
        self.check(data)

    def check(self, data: bytes) -> None:
        """Raise :class:`ArtifactRefused` / :class:`ArtifactUnreadable` unless every op ``data`` can run is allowed."""
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            cached = self._verdicts.get(sha)
            if cached is not None:
                self._verdicts.move_to_end(sha)
        if cached is None:
            cached = self._inspect(data)
            if cached[0] != "error":  # a crashed or slow worker says nothing lasting about the bytes
                with self._lock:
                    self._verdicts[sha] = cached
                    while len(self._verdicts) > self._cache_size:
                        self._verdicts.popitem(last=False)
        _raise(cached)

    def _inspect(self, data: bytes) -> tuple[str, Any]:
        try:
            inspect_archive(data, self.allowed)  # cheap, and spares a subprocess for what it already refuses
        except ArtifactRefused as exc:
            return "refused", exc.findings
        except ArtifactUnreadable as exc:
            return "unreadable", exc.detail
        if not self.isolate:
            return self._inspect_here(data)
        with self._slots:
            return self._inspect_in_subprocess(data)

    def _inspect_here(self, data: bytes) -> tuple[str, Any]:
        try:
            self._load_and_walk(data, "cpu")
        except ArtifactRefused as exc:
            return "refused", exc.findings
        except ArtifactUnreadable as exc:
            return "unreadable", exc.detail
        return "allowed", None

    def _inspect_in_subprocess(self, data: bytes) -> tuple[str, Any]:
        with tempfile.TemporaryDirectory(prefix="modelguard-") as scratch:
            try:
                done = subprocess.run(
                    [sys.executable, "-s", "-m", "mlops.modelguard.worker", ",".join(sorted(self.extra_ops))],
                    input=data, capture_output=True, timeout=self.timeout_s, cwd=scratch, env=worker_env(scratch),
                    check=False)
            except subprocess.TimeoutExpired:
                return "error", f"inspection did not finish within {self.timeout_s:g} s"
        lines = [ln for ln in done.stdout.decode("utf-8", "replace").splitlines() if ln.startswith(VERDICT)]
        if done.returncode != 0 or not lines:
            tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            log.warning("model inspection worker exited %s: %s", done.returncode, tail[0][:500])
            return "error", f"the inspection worker failed (exit {done.returncode}: {tail[0][:200]})"
        out = json.loads(lines[-1].removeprefix(VERDICT))
        if out["verdict"] == "refused":
            return "refused", [Finding(*f) for f in out["findings"]]
        if out["verdict"] == "unreadable":
            return "unreadable", out["message"]
        return "allowed", None

    # -- loading for use ---------------------------------------------------------------------------------
    def load(self, data: bytes, map_location: str | torch.device = "cpu") -> torch.jit.ScriptModule:
        """A module to run: checked as bytes first (nothing is deserialized here before that), then loaded and
        walked again as loaded, so what runs is exactly what was inspected."""
        self.check(data)
        return self._load_and_walk(data, map_location)

    def _load_and_walk(self, data: bytes, map_location: str | torch.device) -> torch.jit.ScriptModule:
        import io
        import warnings

        import torch

        from mlops.modelguard.graphs import inspect_module

        inspect_archive(data, self.allowed)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(io.BytesIO(data), map_location=map_location)
        except Exception as exc:
            raise ArtifactUnreadable(f"torch.jit.load failed: {str(exc).strip().splitlines()[0][:300]}") from None
        inspect_module(module, self.allowed)
        return module


def worker_env(scratch: str) -> dict[str, str]:
    """The inspection worker's whole environment: no token, no platform setting, a scratch home."""
    env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
    env.update(PYTHONPATH=os.pathsep.join(p for p in sys.path if p), PYTHONDONTWRITEBYTECODE="1",
               HOME=scratch, TMPDIR=scratch, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _raise(verdict: tuple[str, Any]) -> None:
    kind, detail = verdict
    if kind == "refused":
        raise ArtifactRefused(detail)
    if kind in ("unreadable", "error"):
        raise ArtifactUnreadable(detail)


_default: ModelPolicy | None = None


def default_policy() -> ModelPolicy:
    """The defaults, isolated, for callers handed no policy (one per process, so verdicts are shared)."""
    global _default
    if _default is None:
        _default = ModelPolicy()
    return _default
