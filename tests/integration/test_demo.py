"""A shortened ``./scripts/demo`` on a stack of its own: it must close the loop by itself and write its
record (summary.json with the contract's keys, report.html, the PNG charts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops.settings import SERVICES, env_name
from tests.integration.stack import PORT_BASE

pytestmark = pytest.mark.integration

BASE = PORT_BASE + 700
KEYS = ("loop_closed", "drift_injected_at", "drift_detected_at", "training_requested_at", "candidate_registered_at",
        "promoted_at", "seconds_drift_to_promotion", "seconds_drift_to_majority_traffic", "versions")


def test_a_short_demo_closes_the_loop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLOPS_") or k in ("MLOPS_TEST_PORT_BASE",)}
    env.update({"MLOPS_HOME": str(tmp_path), "MLOPS_EMBEDDED_KAFKA_PORT": str(BASE + 92),
                "MLOPS_EMBEDDED_REDIS_PORT": str(BASE + 79)})
    for i, service in enumerate(SERVICES):
        env[f"MLOPS_{env_name(service)}_HTTP_PORT"] = str(BASE + 1 + i)
        env[f"MLOPS_{env_name(service)}_GRPC_PORT"] = str(BASE + 11 + i)
    demo = subprocess.run(
        [sys.executable, "-m", "mlops.demo", "--train-events", "2000", "--drift-after", "400",
         "--after-promotion", "100", "--max-predictions", "8000"],
        env=env, text=True, capture_output=True, timeout=900,
    )
    reports = sorted((tmp_path / "reports").glob("demo-*"))
    assert reports, demo.stdout[-3000:] + demo.stderr[-3000:]
    summary = json.loads((reports[-1] / "summary.json").read_text())
    assert demo.returncode == 0, json.dumps(summary, indent=1)[:3000] + demo.stdout[-2000:]
    assert all(k in summary for k in KEYS)
    assert summary["loop_closed"] is True
    assert summary["drift_injected_at"] <= summary["drift_detected_at"] <= summary["training_requested_at"]
    assert summary["training_requested_at"] <= summary["candidate_registered_at"] <= summary["promoted_at"]
    new = summary["promoted_version"]
    assert summary["versions"][new]["accuracy_after_drift"] > summary["versions"]["1"]["accuracy_after_drift"]
    assert summary["versions"][new]["traffic_share_final"] > 0.5
    for name in ("report.html", "traffic.png", "accuracy.png", "drift.png"):
        assert (reports[-1] / name).stat().st_size > 0, name
