"""Training: reproducible weights, a TorchScript artifact that takes raw features, RNG state left alone."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch

from services.trainer.dataset import TrainingData
from services.trainer.training import TrainConfig, split, standardization, train


def make_data(rows: int = 400, seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3)) * np.array([1.0, 50.0, 0.01]) + np.array([0.0, 100.0, -3.0])
    y = ((x[:, 0] + (x[:, 1] - 100.0) / 50.0) > 0).astype(np.int64)
    x[::37, 2] = np.nan  # some missing values
    return TrainingData(x=x.astype(np.float32), y=y, features=["a", "b", "c"], num_classes=2)


CONFIG = TrainConfig(epochs=8, seed=11, hidden=16, batch_size=64)


@pytest.fixture(scope="module")
def result():
    return train(make_data(), CONFIG, device=torch.device("cpu"))


def test_same_seed_gives_identical_weights_and_artifact(result) -> None:
    again = train(make_data(), CONFIG, device=torch.device("cpu"))
    assert again.weights == result.weights
    assert hashlib.sha256(again.artifact).digest() == hashlib.sha256(result.artifact).digest()
    assert again.metrics["accuracy"] == result.metrics["accuracy"]


def test_another_seed_gives_other_weights(result) -> None:
    other = train(make_data(), TrainConfig(epochs=8, seed=12, hidden=16, batch_size=64), device=torch.device("cpu"))
    assert other.weights != result.weights


def test_artifact_takes_raw_features_and_returns_probabilities(result) -> None:
    module = torch.jit.load(io.BytesIO(result.artifact))
    data = make_data(50, seed=5)
    with torch.no_grad():
        probs = module(torch.from_numpy(data.x))
    assert probs.dtype == torch.float32 and probs.shape == (50, 2)
    assert torch.allclose(probs.sum(dim=1), torch.ones(50), atol=1e-5)
    assert not torch.isnan(probs).any()  # missing values count as the mean
    accuracy = float((probs.argmax(dim=1).numpy() == data.y).mean())
    assert accuracy > 0.8  # learnt on raw scales: standardisation is inside the module
    mean = dict(module.named_buffers())["mean"]
    assert mean[1] == pytest.approx(100.0, abs=10.0)


def test_metrics_and_history(result) -> None:
    m = result.metrics
    assert m["rows"] == 400 and m["train_rows"] + m["holdout_rows"] == 400
    assert 0.0 <= m["accuracy"] <= 1.0 and m["accuracy"] > m["baseline_accuracy"] - 0.05
    assert result.classes == ["0", "1"]
    steps = [h["step"] for h in result.history if h["key"] == "accuracy"]
    assert steps == list(range(1, 9))
    assert result.params["seed"] == "11" and result.device == "cpu"


def test_training_leaves_global_rng_and_flags_alone() -> None:
    torch.manual_seed(1234)
    np.random.seed(99)
    expected_torch, expected_np = torch.rand(3), np.random.rand(3)
    torch.manual_seed(1234)
    np.random.seed(99)
    train(make_data(60), TrainConfig(epochs=1, seed=3, hidden=4), device=torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected_torch)
    assert np.array_equal(np.random.rand(3), expected_np)
    assert not torch.are_deterministic_algorithms_enabled()


def test_each_epoch_is_reported_with_its_metrics() -> None:
    seen: list[tuple[int, int, list[str]]] = []
    train(make_data(60), TrainConfig(epochs=4, seed=0, hidden=4),
          on_epoch=lambda e, n, points: seen.append((e, n, [p["key"] for p in points])), device=torch.device("cpu"))
    assert seen == [(e, 4, ["train_loss", "holdout_loss", "accuracy"]) for e in range(1, 5)]


def test_out_of_range_inputs_give_probabilities(result) -> None:
    module = torch.jit.load(io.BytesIO(result.artifact))
    x = torch.tensor([[float("inf"), -float("inf"), float("nan")], [1e30, -1e30, 3.4e38], [0.0, 0.0, 0.0]])
    out = module(x)
    assert torch.isfinite(out).all() and torch.allclose(out.sum(dim=1), torch.ones(3))


def test_result_carries_what_the_gates_and_reference_need(result) -> None:
    assert len(result.holdout_index) == result.metrics["holdout_rows"] == len(result.holdout_pred)
    assert result.scores.shape == (400,) and ((result.scores >= 0) & (result.scores <= 1)).all()
    assert "duration_s" not in result.metrics  # metrics depend on data, code and seed only
    assert result.onnx is not None or "ONNX export unavailable" in result.onnx_note


def test_split_and_standardization_edges() -> None:
    tr, ho = split(2, 0.2, seed=0)
    assert len(tr) == 1 and len(ho) == 1
    tr, ho = split(100, 0.2, seed=0)
    assert len(ho) == 20 and set(tr).isdisjoint(ho)
    x = np.array([[1.0, np.nan, 5.0], [3.0, np.nan, 5.0]], dtype=np.float32)
    mean, std = standardization(x)
    assert mean.tolist() == [2.0, 0.0, 5.0] and std.tolist() == [1.0, 1.0, 1.0]
