"""Data-parallel training: two CPU processes under torchrun (gloo) train one model in step."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.trainer import distributed
from services.trainer.training import TrainConfig


def dataset(rows: int = 600) -> bytes:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=rows), rng.normal(size=rows)
    buf = io.BytesIO()
    pq.write_table(pa.table({"a": a, "b": b, "y": ((a + b) > 0).astype(np.int64)}), buf)
    return buf.getvalue()


async def test_two_processes_train_one_model_in_step(tmp_path: Path) -> None:
    config = TrainConfig(epochs=6, seed=3, hidden=8, learning_rate=0.05)
    distributed.write_job(tmp_path, dataset(), features=["a", "b"], label="y", group_column="", max_classes=10,
                          config=config)
    epochs: list[int] = []
    result = await distributed.launch(tmp_path, 2, lambda epoch, n, points: epochs.append(epoch))
    assert epochs == [1, 2, 3, 4, 5, 6]
    hashes = [(tmp_path / f"rank{r}.weights.sha256").read_text() for r in (0, 1)]
    assert hashes[0] == hashes[1]  # gradients were averaged across the two ranks
    assert result.params["processes"] == "2" and "data-parallel x2" in result.hardware
    assert result.metrics["accuracy"] > 0.85 and result.artifact
    assert len(result.scores) == 600


async def test_a_failing_group_reports_its_output(tmp_path: Path) -> None:
    distributed.write_job(tmp_path, b"not parquet", features=["a"], label="y", group_column="", max_classes=10,
                          config=TrainConfig(epochs=1))
    with pytest.raises(distributed.DistributedError) as err:
        await distributed.launch(tmp_path, 2, lambda *_: None)
    assert "not readable Parquet" in str(err.value)
