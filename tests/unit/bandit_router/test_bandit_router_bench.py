"""``./scripts/bench bandit --quick`` end to end (about 10 s): the contract's keys, the PNG and the curves."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from mlops.bench import bandit


def test_bandit_bench_quick_writes_its_keys_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    result = bandit.run(quick=True, console=Console(file=io.StringIO()))
    payload = result.to_json()
    assert payload["bench"] == "bandit"
    for key in ("regret_reduction_vs_uniform_thompson", "requests_to_90pct_best_thompson"):
        assert math.isfinite(payload["figures"][key]) and key in payload["targets"]
    assert payload["targets"]["regret_reduction_vs_uniform_thompson"]["met"]
    out = tmp_path / "reports" / "bench"
    assert (out / "bench-bandit-regret.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = json.loads((out / "bench-bandit-curves.json").read_text())
    assert {c["scenario"] for c in curves} == {"conversion", "context"}
    assert set(curves[0]["policies"]) >= {"uniform", "epsilon_greedy", "ucb1", "thompson", "linucb"}
