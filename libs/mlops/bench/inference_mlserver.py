"""MLServer for ``./scripts/bench inference``: its own virtual environment, a model directory serving the
benchmark MLP through a small custom runtime, with adaptive batching on.

The environment lives under ``$MLOPS_HOME/bench-venvs/mlserver-1.7.1`` (made once, reused): torch 2.13.0
first (the CPU wheel, as in the platform's own venv), then ``mlserver==1.7.1 uvloop==0.21.0`` (MLServer
1.7.1 breaks with newer uvloop, SeldonIO/MLServer#2286). MLServer runs with its defaults (one parallel
inference worker process) apart from the ports, ``debug: false``, and adaptive batching with the same
limits as the service (64 per batch, 2 ms).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console

VERSION = "1.7.1"
PACKAGES = (f"mlserver=={VERSION}", "uvloop==0.21.0")
TORCH = "torch==2.13.0"

RUNTIME = '''"""The benchmark MLP as an MLServer custom runtime (TorchScript, one forward pass per batch)."""
import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class MlpRuntime(MLModel):
    async def load(self) -> bool:
        torch.set_num_threads({threads})
        self._model = torch.jit.load(await get_model_uri(self._settings))
        self._model.eval()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = np.ascontiguousarray(NumpyCodec.decode_input(payload.inputs[0]), dtype=np.float32)
        with torch.inference_mode():
            y = self._model(torch.from_numpy(x)).numpy()
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("output", y)])
'''


def venv_dir(home: Path) -> Path:
    return home / "bench-venvs" / f"mlserver-{VERSION}"


def ensure_venv(home: Path, console: Console) -> tuple[Path | None, str]:
    """The ``mlserver`` executable of the bench venv (installed on first use), or None and why not."""
    venv = venv_dir(home)
    exe = venv / "bin" / "mlserver"
    stamp = venv / ".mlops-installed"
    if exe.exists() and stamp.exists():
        return exe, ""
    console.print(f"installing MLServer {VERSION} into {venv} (first run only; a minute or two)")
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", TORCH],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *PACKAGES],
    ]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            return None, f"MLServer install failed at `{' '.join(step[-2:])}`: {' | '.join(tail)}"
    stamp.write_text(" ".join([TORCH, *PACKAGES]) + "\n")
    return exe, ""


def prepare(workdir: Path, model_file: Path, *, http_port: int, grpc_port: int, metrics_port: int,
            max_batch_size: int = 64, max_batch_time_s: float = 0.002, threads: int = 1) -> Path:
    """Write MLServer's settings, the model's settings and the runtime module; returns the directory to serve."""
    root = workdir / "mlserver"
    model_dir = root / "mlp"
    model_dir.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps({
        "debug": False, "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
    }))
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": "mlp",
        "implementation": "mlp_runtime.MlpRuntime",
        "max_batch_size": max_batch_size,
        "max_batch_time": max_batch_time_s,
        "parameters": {"uri": str(model_file)},
    }))
    (model_dir / "mlp_runtime.py").write_text(RUNTIME.replace("{threads}", str(threads)))
    return root


def command(exe: Path, root: Path) -> list[str]:
    return [str(exe), "start", str(root)]
