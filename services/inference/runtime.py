"""Model runtimes: an abstract :class:`Runtime` chosen by the artifact's format (a ``type`` string), and
the TorchScript implementation (CUDA when available, else CPU).

``forward`` is synchronous and is called from a worker thread by the batcher; everything here is
blocking on purpose and never touches the event loop.
"""

from __future__ import annotations

import io
import logging
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch

from mlops.errors import InvalidArgument

log = logging.getLogger(__name__)


def pick_device(setting: str) -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else is taken literally."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


class Runtime(ABC):
    """One loaded model: float32 rows in, float32 rows out."""

    type: ClassVar[str]
    _registry: ClassVar[dict[str, type[Runtime]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "type", None):
            Runtime._registry[cls.type] = cls

    @classmethod
    def for_format(cls, artifact_format: str) -> type[Runtime]:
        try:
            return cls._registry[artifact_format or "torchscript"]
        except KeyError:
            raise InvalidArgument(f"no runtime for artifact format '{artifact_format}'") from None

    @classmethod
    @abstractmethod
    def load(cls, artifact: bytes, device: torch.device) -> Runtime:
        """Deserialize ``artifact`` onto ``device``."""

    @property
    @abstractmethod
    def device(self) -> str: ...

    @abstractmethod
    def forward(self, rows: np.ndarray) -> np.ndarray:
        """Run the model on ``rows`` (``[n, features]``) and return ``[n, outputs]``."""


class TorchScriptRuntime(Runtime):
    """A ``torch.jit`` module. On CUDA, inputs are staged in pinned memory and copied without blocking."""

    type = "torchscript"

    def __init__(self, module: torch.jit.ScriptModule, device: torch.device) -> None:
        self._module = module
        self._device = device
        self._cuda = device.type == "cuda"

    @classmethod
    def load(cls, artifact: bytes, device: torch.device) -> TorchScriptRuntime:
        module = torch.jit.load(io.BytesIO(artifact), map_location=device)
        module.eval()
        return cls(module, device)

    @property
    def device(self) -> str:
        return str(self._device)

    def forward(self, rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if not rows.flags.writeable:  # frombuffer views of request bytes; torch wants writable memory
            rows = rows.copy()
        tensor = torch.from_numpy(rows)
        with torch.inference_mode():
            if self._cuda:
                tensor = tensor.pin_memory().to(self._device, non_blocking=True)
                out = self._module(tensor)
                host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
                host.copy_(out, non_blocking=True)
                torch.cuda.current_stream(self._device).synchronize()
                result = host
            else:
                result = self._module(tensor)
        if isinstance(result, tuple | list):
            result = result[0]
        return result.detach().to(torch.float32).numpy()
