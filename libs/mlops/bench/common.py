"""What every benchmark shares: the machine description, the result shape, targets, the table."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass, field
from typing import Any


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["cuda"] = None
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return info


@dataclass
class Result:
    """Figures measured, and targets each judged against one figure."""

    bench: str
    figures: dict[str, float] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def figure(self, key: str, value: float) -> None:
        self.figures[key] = float(value)

    def target(self, key: str, target: float, higher_is_better: bool = True) -> None:
        value = self.figures[key]
        met = value >= target if higher_is_better else value <= target
        self.targets[key] = {"value": value, "target": target, "met": bool(met),
                             "direction": ">=" if higher_is_better else "<="}

    def to_json(self) -> dict[str, Any]:
        return {"bench": self.bench, "machine": machine(), "figures": self.figures, "targets": self.targets,
                "notes": self.notes}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")
