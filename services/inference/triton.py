"""The optional Triton backend (``MLOPS_TRITON_URL``): model versions are exported to a Triton model
repository and forward passes go to Triton through tritonclient.

Export writes ``<repository>/<model>/<version>/model.pt`` (the TorchScript artifact as the registry holds
it), ``<repository>/<model>/config.pbtxt`` (``pytorch_libtorch``, FP32 ``[-1, F]`` in, ``[-1, C]`` out,
``dynamic_batching`` with the model's queue delay) and ``signature.json`` (names, for tools). Triton then
loads it: through its model repository API when it runs with ``--model-control-mode=explicit``, or by
itself in ``poll`` mode; either way the version serves only once Triton says it is ready.

The service keeps its own transports, batcher, metrics and prediction log; only the forward pass moves:
:class:`TritonRuntime` is a :class:`Runtime` whose ``forward`` is a V2 ``ModelInfer`` on Triton (sync
client, on the batcher's thread, like any forward pass).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from mlops.errors import Unavailable
from mlops.modelguard import ModelPolicy
from mlops.v1 import registry_pb2
from services.inference.runtime import Runtime

log = logging.getLogger(__name__)

#: Triton's libtorch backend binds tensors by position through these names.
INPUT, OUTPUT = "INPUT__0", "OUTPUT__0"


def triton_name(model: str) -> str:
    """A Triton model name for a registry model (letters, digits, ``-``, ``_``, ``.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", model)


def triton_version(version: str) -> str:
    """Triton versions are positive integers; registry versions are too (anything else is refused)."""
    if not version.isdigit() or int(version) < 1:
        raise Unavailable(f"version '{version}' cannot be a Triton model version (positive integers only)")
    return str(int(version))


def config_pbtxt(name: str, n_features: int | None, *, max_batch_size: int, max_queue_delay_us: int) -> str:
    features = n_features if n_features else -1
    return (
        f'name: "{name}"\n'
        'platform: "pytorch_libtorch"\n'
        f"max_batch_size: {max_batch_size}\n"
        f'input [ {{ name: "{INPUT}" data_type: TYPE_FP32 dims: [ {features} ] }} ]\n'
        f'output [ {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ -1 ] }} ]\n'
        "version_policy: { all { } }\n"
        f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n"
    )


def export(root: Path, mv: registry_pb2.ModelVersion, artifact: bytes, *, max_batch_size: int,
           max_queue_delay_us: int) -> tuple[str, str]:
    """Write the version into the Triton repository at ``root``; returns Triton's ``(name, version)``."""
    name, version = triton_name(mv.model), triton_version(mv.version)
    model_dir = root / name
    (model_dir / version).mkdir(parents=True, exist_ok=True)
    tmp = model_dir / version / "model.pt.tmp"
    tmp.write_bytes(artifact)
    tmp.replace(model_dir / version / "model.pt")  # Triton in poll mode never sees a half-written file
    n_features = len(mv.signature.features) or None
    (model_dir / "config.pbtxt").write_text(config_pbtxt(
        name, n_features, max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us))
    signature = {"features": list(mv.signature.features), "input_name": INPUT, "output_name": OUTPUT,
                 "classes": list(mv.signature.classes)}
    (model_dir / "signature.json").write_text(json.dumps(signature))
    return name, version


class TritonRuntime(Runtime):
    """Forward passes on a Triton server (``type`` is not an artifact format: it is chosen by settings)."""

    type = ""

    def __init__(self, url: str, name: str, version: str, timeout_s: float, root: Path | None = None) -> None:
        self._url, self._name, self._version, self._timeout = url, name, version, timeout_s
        self._root = root
        self._client = tgrpc.InferenceServerClient(url)

    @classmethod
    def load(cls, artifact: bytes, device: torch.device, models: ModelPolicy | None = None) -> Runtime:
        raise TypeError("TritonRuntime is made by TritonBackend.load")

    @property
    def device(self) -> str:
        return f"triton:{self._url}"

    def forward(self, rows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(rows, dtype=np.float32)
        inp = tgrpc.InferInput(INPUT, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        try:
            result = self._client.infer(self._name, [inp], model_version=self._version,
                                        outputs=[tgrpc.InferRequestedOutput(OUTPUT)], client_timeout=self._timeout)
        except InferenceServerException as exc:
            raise Unavailable(f"triton: {exc.message()}") from None
        out = result.as_numpy(OUTPUT)
        if out is None:
            raise Unavailable(f"triton answered no {OUTPUT}")
        return out.astype(np.float32, copy=False).reshape(x.shape[0], -1)

    def close(self) -> None:
        """Unload the version from Triton (explicit mode) and remove it from the repository (poll mode)."""
        try:
            self._client.unload_model(self._name)
        except InferenceServerException as exc:
            log.debug("triton unload of %s: %s", self._name, exc.message())
        if self._root is not None:
            shutil.rmtree(self._root / self._name / self._version, ignore_errors=True)
        self._client.close()


class TritonBackend:
    """Exports versions to Triton's model repository and waits until Triton serves them."""

    def __init__(self, url: str, root: Path, *, timeout_s: float = 30.0, load_timeout_s: float = 120.0) -> None:
        self.url, self.root = url, root
        self._timeout, self._load_timeout = timeout_s, load_timeout_s

    def load(self, mv: registry_pb2.ModelVersion, artifact: bytes, *, max_batch_size: int,
             max_queue_delay_us: int) -> TritonRuntime:
        """Blocking: export, ask Triton to load (explicit mode), wait until it reports the version ready."""
        name, version = export(self.root, mv, artifact, max_batch_size=max_batch_size,
                               max_queue_delay_us=max_queue_delay_us)
        client = tgrpc.InferenceServerClient(self.url)
        try:
            try:
                client.load_model(name)
            except InferenceServerException as exc:  # poll mode (or no repository API): Triton loads by itself
                log.info("triton load_model(%s) refused (%s); waiting for it to load on its own",
                         name, exc.message())
            deadline = time.monotonic() + self._load_timeout
            while True:
                try:
                    if client.is_model_ready(name, version):
                        break
                except InferenceServerException:
                    pass
                if time.monotonic() > deadline:
                    raise Unavailable(f"triton did not load {name} version {version} within {self._load_timeout:.0f} s")
                time.sleep(0.2)
        finally:
            client.close()
        log.info("triton serves %s:%s as %s/%s", mv.model, mv.version, name, version)
        return TritonRuntime(self.url, name, version, self._timeout, self.root)
