"""Data-parallel training with ``torch.distributed``: the launcher the trainer calls, and the per-rank entry.

The trainer writes the dataset and the job to a work directory and starts
``python -m torch.distributed.run --standalone --nproc_per_node=N -m services.trainer.distributed --work DIR``
(torchrun). Each rank joins the group (gloo on CPU, nccl on CUDA), trains its share of every batch
(:func:`services.trainer.training.train` with a :class:`World`), and rank 0 prints each epoch's metrics
on stdout (``MLOPS_EPOCH {json}``) and saves the result to ``DIR/result``, which the launcher reads back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mlops.settings import REPO_ROOT
from services.trainer.dataset import from_parquet
from services.trainer.training import TrainConfig, TrainResult, World, train, uses_cuda

EPOCH_PREFIX = "MLOPS_EPOCH "
_EXCEPTION_LINE = re.compile(r"^(\[rank\d+\]:)?\s*[A-Za-z_][\w.]*(Error|Exception): ")
#: Lines of the ranks' output kept for the error message when the group fails.
TAIL_LINES = 40


class DistributedError(Exception):
    """The process group failed; the message carries the end of its output."""


# -- results on disk ----------------------------------------------------------------------------------
def save_result(result: TrainResult, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.pt").write_bytes(result.artifact)
    (path / "weights.bin").write_bytes(result.weights)
    if result.onnx is not None:
        (path / "model.onnx").write_bytes(result.onnx)
    np.savez(path / "arrays.npz", holdout_index=result.holdout_index, holdout_pred=result.holdout_pred,
             scores=result.scores)
    meta = {k: getattr(result, k) for k in ("metrics", "history", "classes", "hardware", "device", "params",
                                            "duration_s", "onnx_note")}
    (path / "result.json").write_text(json.dumps(meta))


def load_result(path: Path) -> TrainResult:
    meta = json.loads((path / "result.json").read_text())
    arrays = np.load(path / "arrays.npz")
    onnx = path / "model.onnx"
    return TrainResult(
        artifact=(path / "model.pt").read_bytes(),
        weights=(path / "weights.bin").read_bytes(),
        holdout_index=arrays["holdout_index"],
        holdout_pred=arrays["holdout_pred"],
        scores=arrays["scores"],
        onnx=onnx.read_bytes() if onnx.exists() else None,
        **meta,
    )


# -- the launcher -------------------------------------------------------------------------------------
def write_job(work: Path, data: bytes, *, features: list[str], label: str, group_column: str, max_classes: int,
              config: TrainConfig) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "data.parquet").write_bytes(data)
    job = {"features": features, "label": label, "group_column": group_column, "max_classes": max_classes,
           "config": asdict(config)}
    (work / "job.json").write_text(json.dumps(job))


def command(work: Path, processes: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "services.trainer.distributed", "--work", str(work)]


async def launch(
    work: Path, processes: int, on_epoch: Callable[[int, int, list[dict[str, float]]], None]
) -> TrainResult:
    """Run the group on the job in ``work``; ``on_epoch`` gets rank 0's per-epoch metrics as they come."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    env.setdefault("OMP_NUM_THREADS", "1")  # N ranks on a few cores: one thread each
    proc = await asyncio.create_subprocess_exec(
        *command(work, processes), cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )
    tail: list[str] = []
    errors: list[str] = []  # the ranks' own exception lines; torchrun's summary at the end names none
    try:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line.startswith(EPOCH_PREFIX):
                msg = json.loads(line[len(EPOCH_PREFIX):])
                on_epoch(msg["epoch"], msg["epochs"], msg["points"])
            elif line:
                tail = [*tail[-(TAIL_LINES - 1):], line]
                if _EXCEPTION_LINE.match(line) and "ChildFailedError" not in line:
                    errors.append(line)
        code = await proc.wait()
    except BaseException:
        # Cancelled (the service is stopping) or the callback raised: stop every rank, then re-raise.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    if code != 0 or not (work / "result" / "result.json").exists():
        cause = errors[-1] if errors else "\n".join(tail[-15:])
        raise DistributedError(f"distributed training exited with {code}: {cause}")
    return load_result(work / "result")


# -- one rank -----------------------------------------------------------------------------------------
def _rank_main(work: Path) -> int:
    import torch
    import torch.distributed as dist

    job: dict[str, Any] = json.loads((work / "job.json").read_text())
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    backend = "nccl" if uses_cuda(world) else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    try:
        data = from_parquet((work / "data.parquet").read_bytes(), job["features"], job["label"], job["max_classes"],
                            job["group_column"])

        def report(epoch: int, epochs: int, points: list[dict[str, float]]) -> None:
            if world.is_main:
                print(EPOCH_PREFIX + json.dumps({"epoch": epoch, "epochs": epochs, "points": points}), flush=True)

        result = train(data, TrainConfig(**job["config"]), report, world=world)
        # Every rank leaves the hash of its final weights: equal hashes show the ranks trained in step.
        (work / f"rank{world.rank}.weights.sha256").write_text(hashlib.sha256(result.weights).hexdigest())
        if world.is_main:
            save_result(result, work / "result")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One rank of a data-parallel training job (run by torchrun).")
    parser.add_argument("--work", type=Path, required=True, help="Directory with data.parquet and job.json.")
    return _rank_main(parser.parse_args(argv).work)


if __name__ == "__main__":
    raise SystemExit(main())
