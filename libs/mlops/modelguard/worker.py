"""The inspection subprocess: ``python -m mlops.modelguard.worker [extra ops]`` with the artifact on stdin.

It runs the static checks, then loads the archive (only after those passed: nothing of the model runs while
loading) and walks its graphs, and prints one verdict line. It never calls a method of the model. It
starts with no platform settings or tokens in its environment, in an empty temporary directory, and it
may not write a single byte to any file (``RLIMIT_FSIZE`` 0), so even a load-time surprise the static
checks missed lands in a process that holds nothing and can write nothing.
"""

from __future__ import annotations

import io
import json
import signal
import sys
import warnings

#: Marks the verdict line on stdout (anything else there is noise from libraries).
VERDICT = "MODELGUARD-VERDICT "


def _no_file_writes() -> None:
    try:
        import resource
    except ImportError:  # not POSIX: the static checks and the subprocess still stand
        return
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails with EFBIG instead of killing the worker
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def verdict(data: bytes, extra: frozenset[str]) -> dict[str, object]:
    import torch

    from mlops.modelguard.archive import inspect_archive
    from mlops.modelguard.graphs import inspect_module
    from mlops.modelguard.ops import PURE_TENSOR_OPS
    from mlops.modelguard.refusal import ArtifactRefused, ArtifactUnreadable

    allowed = PURE_TENSOR_OPS | extra
    _no_file_writes()
    try:
        inspect_archive(data, allowed)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = torch.jit.load(io.BytesIO(data), map_location="cpu")
        except Exception as exc:
            raise ArtifactUnreadable(f"torch.jit.load failed: {str(exc).strip().splitlines()[0][:300]}") from None
        report = inspect_module(module, allowed)
    except ArtifactRefused as exc:
        return {"verdict": "refused", "findings": [[f.op, f.where, f.why] for f in exc.findings]}
    except ArtifactUnreadable as exc:
        return {"verdict": "unreadable", "message": exc.detail}
    return {"verdict": "allowed", "methods": report.methods, "ops": report.ops}


def main() -> None:
    extra = frozenset(op for op in (sys.argv[1] if len(sys.argv) > 1 else "").split(",") if op)
    data = sys.stdin.buffer.read()
    out = verdict(data, extra)
    sys.stdout.write("\n" + VERDICT + json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
