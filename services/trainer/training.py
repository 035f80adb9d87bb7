"""Fitting and exporting the classifier: a small seeded MLP with standardisation baked in.

The exported TorchScript module takes raw features (FP32 [N, F], in signature order) and returns class
probabilities (FP32 [N, C]); missing values (NaN) count as the training mean. Training is reproducible:
the same data, config and seed give the same weights, byte for byte, on the same device type.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

# cuBLAS needs this before it starts to be deterministic; harmless on CPU.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np
import torch
from torch import nn

from services.trainer.dataset import TrainingData

Progress = Callable[[float], None]

#: Per-metric history points sent with a run; long trainings record every k-th epoch (and the last).
MAX_HISTORY_POINTS = 200

# Seeding touches process-wide RNG state; one training at a time keeps runs from disturbing each other.
_TRAIN_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class TrainConfig:
    epochs: int = 30
    seed: int = 0
    hidden: int = 32
    learning_rate: float = 0.01
    batch_size: int = 128
    holdout_fraction: float = 0.2


@dataclass(slots=True)
class TrainResult:
    artifact: bytes  # TorchScript, torch.jit.save format
    weights: bytes  # every parameter and buffer, concatenated: the reproducibility fingerprint
    metrics: dict[str, float]
    history: list[dict[str, float]]  # per epoch: key, value, step
    classes: list[str]
    hardware: str
    device: str
    params: dict[str, str] = field(default_factory=dict)


class Classifier(nn.Module):
    """MLP over standardised features; ``forward`` returns class probabilities."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone().float())
        self.register_buffer("std", std.clone().float())
        n = int(mean.shape[0])
        self.net = nn.Sequential(
            nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.to(torch.float32) - self.mean) / self.std
        return torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def describe_hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}; torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"cpu:{cpu} x{os.cpu_count()}; torch {torch.__version__}"


@contextlib.contextmanager
def _reproducible(seed: int) -> Iterator[None]:
    """Seed torch and numpy, force deterministic kernels, and put everything back afterwards."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_deterministic, cudnn_benchmark = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    np_state = np.random.get_state()
    with _TRAIN_LOCK, torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_deterministic, cudnn_benchmark
            np.random.set_state(np_state)


def split(rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, holdout) row indices; at least one row on each side."""
    perm = np.random.default_rng(seed).permutation(rows)
    n_hold = min(rows - 1, max(1, round(rows * fraction)))
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


def standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std ignoring NaN; a constant or empty column gets std 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: handled below
        mean = np.nanmean(x, axis=0) if len(x) else np.zeros(x.shape[1])
        std = np.nanstd(x, axis=0) if len(x) else np.ones(x.shape[1])
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def _evaluate(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model.logits(x)
        loss = float(nn.functional.cross_entropy(logits, y))
        accuracy = float((logits.argmax(dim=1) == y).float().mean())
    model.train()
    return loss, accuracy


def export_torchscript(model: Classifier) -> bytes:
    model = model.cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)  # serving needs no autograd graph
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # TorchScript is the platform's artifact format (the inference service loads it); torch 2.13 warns
        # that it is deprecated in favour of torch.export.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), buf)
    return buf.getvalue()


def weights_fingerprint(model: nn.Module) -> bytes:
    return b"".join(t.detach().cpu().contiguous().numpy().tobytes() for t in model.state_dict().values())


def train(
    data: TrainingData, config: TrainConfig, progress: Progress | None = None, device: torch.device | None = None
) -> TrainResult:
    """Fit a classifier on ``data`` and export it; ``progress`` gets 0..1 after each epoch."""
    device = device or pick_device()
    started = time.perf_counter()
    train_idx, hold_idx = split(data.rows, config.holdout_fraction, config.seed)
    mean, std = standardization(data.x[train_idx])
    x = torch.from_numpy(data.x).to(device)
    y = torch.from_numpy(data.y).to(device)
    x_train, y_train = x[torch.from_numpy(train_idx).to(device)], y[torch.from_numpy(train_idx).to(device)]
    x_hold, y_hold = x[torch.from_numpy(hold_idx).to(device)], y[torch.from_numpy(hold_idx).to(device)]
    history: list[dict[str, float]] = []
    with _reproducible(config.seed):
        model = Classifier(torch.from_numpy(mean), torch.from_numpy(std), config.hidden, data.num_classes).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        shuffle = torch.Generator().manual_seed(config.seed)
        n = len(train_idx)
        stride = -(-config.epochs // MAX_HISTORY_POINTS)
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(n, generator=shuffle).to(device)
            total = 0.0
            for start in range(0, n, config.batch_size):
                idx = order[start : start + config.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model.logits(x_train[idx]), y_train[idx])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            if epoch % stride == 0 or epoch == config.epochs:
                hold_loss, hold_acc = _evaluate(model, x_hold, y_hold)
                now = time.time()
                history += [
                    {"key": "train_loss", "value": total / max(n, 1), "step": epoch, "time": now},
                    {"key": "holdout_loss", "value": hold_loss, "step": epoch, "time": now},
                    {"key": "accuracy", "value": hold_acc, "step": epoch, "time": now},
                ]
            if progress is not None:
                progress(epoch / config.epochs)
        train_loss, train_acc = _evaluate(model, x_train, y_train)
        hold_loss, hold_acc = _evaluate(model, x_hold, y_hold)
        weights = weights_fingerprint(model)
        artifact = export_torchscript(model)
    majority = np.bincount(data.y[train_idx], minlength=data.num_classes).argmax()
    metrics = {
        "accuracy": hold_acc,
        "holdout_loss": hold_loss,
        "train_accuracy": train_acc,
        "train_loss": train_loss,
        "baseline_accuracy": float(np.mean(data.y[hold_idx] == majority)),
        "rows": float(data.rows),
        "train_rows": float(len(train_idx)),
        "holdout_rows": float(len(hold_idx)),
        "num_classes": float(data.num_classes),
        "duration_s": time.perf_counter() - started,
    }
    return TrainResult(
        artifact=artifact,
        weights=weights,
        metrics=metrics,
        history=history,
        classes=[str(c) for c in range(data.num_classes)],
        hardware=describe_hardware(device),
        device=device.type,
        params={
            "epochs": str(config.epochs),
            "seed": str(config.seed),
            "hidden": str(config.hidden),
            "learning_rate": str(config.learning_rate),
            "batch_size": str(config.batch_size),
            "holdout_fraction": str(config.holdout_fraction),
            "optimizer": "adam",
            "architecture": f"mlp({len(data.features)}-{config.hidden}-{config.hidden}-{data.num_classes})",
        },
    )
