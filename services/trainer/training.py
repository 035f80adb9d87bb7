"""Fitting and exporting the classifier: a small seeded MLP with standardisation baked in.

The exported TorchScript module takes raw features (FP32 [N, F], in signature order) and returns class
probabilities (FP32 [N, C]); missing values (NaN) count as the training mean and standardised inputs are
clipped to +-``clip`` (so out-of-range values, even +-inf, give valid probabilities). Training is
reproducible: the same data, config and seed give the same weights, byte for byte, on the same device type.

The same loop runs data-parallel under ``torch.distributed`` (see :mod:`services.trainer.distributed`):
every rank draws the same shuffled order, takes its share of each global batch, and DDP averages the
gradients; the loss is scaled so that the update equals the single-process one on the whole batch.
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
import torch.distributed as dist
from torch import nn

from services.trainer.dataset import TrainingData

#: Called after every epoch with (epoch, epochs, metric points of that epoch); may raise to stop training.
EpochCallback = Callable[[int, int, list[dict[str, float]]], None]

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
    clip: float = 100.0  # standardised inputs are clipped to +-clip


@dataclass(frozen=True, slots=True)
class World:
    """This process's place in a data-parallel group (rank 0 of 1 when training alone)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(slots=True)
class TrainResult:
    artifact: bytes  # TorchScript, torch.jit.save format (empty on ranks other than 0)
    weights: bytes  # every parameter and buffer, concatenated: the reproducibility fingerprint
    metrics: dict[str, float]  # functions of data, code and seed only: reruns give the same values
    history: list[dict[str, float]]  # per epoch: key, value, step, time
    classes: list[str]
    hardware: str
    device: str
    params: dict[str, str] = field(default_factory=dict)
    holdout_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    holdout_pred: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # positive-class, all rows
    duration_s: float = 0.0
    onnx: bytes | None = None
    onnx_note: str = ""


class Classifier(nn.Module):
    """MLP over standardised features; ``forward`` returns class probabilities."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, hidden: int, num_classes: int,
                 clip: float = 100.0) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone().float())
        self.register_buffer("std", std.clone().float())
        self.clip = float(clip)
        n = int(mean.shape[0])
        self.net = nn.Sequential(
            nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.to(torch.float32) - self.mean) / self.std
        z = torch.nan_to_num(z, nan=0.0, posinf=self.clip, neginf=-self.clip)
        return torch.clamp(z, -self.clip, self.clip)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


class _Logits(nn.Module):
    """What DDP wraps: its forward must be the training forward (logits), so gradients are synchronised."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(x)


def uses_cuda(world: World | None = None) -> bool:
    """CUDA when present, and for a data-parallel group one GPU per rank (NCCL cannot share a GPU between
    ranks); otherwise the group trains on CPU with gloo."""
    size = world.size if world else 1
    return torch.cuda.is_available() and torch.cuda.device_count() >= size


def pick_device(world: World | None = None) -> torch.device:
    if uses_cuda(world):
        local = int(os.environ.get("LOCAL_RANK", "0")) if world and world.size > 1 else 0
        return torch.device("cuda", local)
    return torch.device("cpu")


def describe_hardware(device: torch.device, world: World | None = None) -> str:
    if device.type == "cuda":
        what = f"cuda:{torch.cuda.get_device_name(device)}; torch {torch.__version__}"
    else:
        cpu = platform.processor() or platform.machine()
        what = f"cpu:{cpu} x{os.cpu_count()}; torch {torch.__version__}"
    return f"{what}; data-parallel x{world.size}" if world and world.size > 1 else what


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


def positive_scores(probabilities: np.ndarray) -> np.ndarray:
    """The positive-class score: P(class 1) for two classes, the top probability otherwise."""
    if probabilities.shape[1] == 2:
        return probabilities[:, 1]
    return probabilities.max(axis=1)


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


def export_onnx(model: Classifier) -> tuple[bytes | None, str]:
    """ONNX bytes when the exporter works with what is installed, else None and why (no new dependency)."""
    model = model.cpu().eval()
    buf = io.BytesIO()
    example = torch.zeros(1, int(model.mean.shape[0]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), buf, input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, dynamo=False)
    except Exception as exc:  # the exporter needs the onnx package, which the platform does not install
        return None, f"ONNX export unavailable: {exc}"
    return buf.getvalue(), ""


def weights_fingerprint(model: nn.Module) -> bytes:
    return b"".join(t.detach().cpu().contiguous().numpy().tobytes() for t in model.state_dict().values())


def _global_sum(value: float, world: World, device: torch.device) -> float:
    if world.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def train(
    data: TrainingData,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    device: torch.device | None = None,
    world: World | None = None,
) -> TrainResult:
    """Fit a classifier on ``data`` and export it; ``on_epoch`` gets each epoch's metrics."""
    world = world or World()
    device = device or pick_device(world)
    started = time.perf_counter()
    train_idx, hold_idx = split(data.rows, config.holdout_fraction, config.seed)
    mean, std = standardization(data.x[train_idx])
    x = torch.from_numpy(data.x).to(device)
    y = torch.from_numpy(data.y).to(device)
    x_train, y_train = x[torch.from_numpy(train_idx).to(device)], y[torch.from_numpy(train_idx).to(device)]
    x_hold, y_hold = x[torch.from_numpy(hold_idx).to(device)], y[torch.from_numpy(hold_idx).to(device)]
    history: list[dict[str, float]] = []
    with _reproducible(config.seed):
        model = Classifier(torch.from_numpy(mean), torch.from_numpy(std), config.hidden, data.num_classes,
                           config.clip).to(device)
        net: nn.Module = _Logits(model)
        if world.size > 1:
            net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        shuffle = torch.Generator().manual_seed(config.seed)
        n = len(train_idx)
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(n, generator=shuffle)  # the same on every rank
            total = 0.0
            for start in range(0, n, config.batch_size):
                batch = order[start : start + config.batch_size]
                mine = batch[world.rank :: world.size].to(device)
                optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(net(x_train[mine]), y_train[mine], reduction="sum")
                # DDP averages gradients over ranks; scaling by size/len(batch) makes that the batch mean.
                (loss * (world.size / len(batch))).backward()
                optimizer.step()
                total += float(loss.detach())
            total = _global_sum(total, world, device)
            hold_loss, hold_acc = _evaluate(model, x_hold, y_hold)
            now = time.time()
            points = [
                {"key": "train_loss", "value": total / max(n, 1), "step": epoch, "time": now},
                {"key": "holdout_loss", "value": hold_loss, "step": epoch, "time": now},
                {"key": "accuracy", "value": hold_acc, "step": epoch, "time": now},
            ]
            history += points
            if on_epoch is not None:
                on_epoch(epoch, config.epochs, points)
        train_loss, train_acc = _evaluate(model, x_train, y_train)
        hold_loss, hold_acc = _evaluate(model, x_hold, y_hold)
        model.eval()
        with torch.no_grad():
            probabilities = model(x).cpu().numpy()
        weights = weights_fingerprint(model)
        artifact = export_torchscript(model) if world.is_main else b""
        onnx, onnx_note = export_onnx(model) if world.is_main else (None, "")
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
    }
    return TrainResult(
        artifact=artifact,
        weights=weights,
        metrics=metrics,
        history=history,
        classes=[str(c) for c in range(data.num_classes)],
        hardware=describe_hardware(device, world),
        device=device.type,
        params={
            "epochs": str(config.epochs),
            "seed": str(config.seed),
            "hidden": str(config.hidden),
            "learning_rate": str(config.learning_rate),
            "batch_size": str(config.batch_size),
            "holdout_fraction": str(config.holdout_fraction),
            "clip": str(config.clip),
            "optimizer": "adam",
            "architecture": f"mlp({len(data.features)}-{config.hidden}-{config.hidden}-{data.num_classes})",
            "processes": str(world.size),
        },
        holdout_index=hold_idx,
        holdout_pred=probabilities[hold_idx].argmax(axis=1).astype(np.int64),
        scores=positive_scores(probabilities).astype(np.float32),
        duration_s=time.perf_counter() - started,
        onnx=onnx,
        onnx_note=onnx_note,
    )
