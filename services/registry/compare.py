"""Runs side by side: params, metrics and captured environment, with what differs and by how much.

Pure: takes :class:`RunView` records and returns JSON-ready data (``GET /v1/runs/compare``,
``mlops runs compare A B``).
"""

from __future__ import annotations

from typing import Any

from services.registry.views import RunView

#: Environment fields compared one by one (pip freeze is compared package by package instead).
ENV_KEYS = ("dataset_id", "definitions_hash", "git_commit", "git_dirty", "diff_sha256", "python_version", "seed",
            "hardware")


def _packages(freeze: str) -> dict[str, str]:
    """``name==version`` lines (and ``name @ url``) as a mapping of lower-cased name to version."""
    out: dict[str, str] = {}
    for line in freeze.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for sep in ("==", " @ "):
            if sep in line:
                name, _, version = line.partition(sep)
                out[name.strip().lower()] = version.strip()
                break
        else:
            out[line.lower()] = ""
    return out


def _side_by_side(values: list[dict[str, Any]], ids: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    keys = sorted(set().union(*(v.keys() for v in values)))
    table = {k: {rid: v.get(k) for rid, v in zip(ids, values, strict=True)} for k in keys}
    differ = [k for k, row in table.items() if len({repr(x) for x in row.values()}) > 1]
    return table, differ


def compare(runs: list[RunView]) -> dict[str, Any]:
    """Params, metrics and environment of ``runs`` side by side; for two runs, metric deltas (second - first)."""
    ids = [r.id for r in runs]
    params, params_differ = _side_by_side([r.params for r in runs], ids)
    metrics, metrics_differ = _side_by_side([r.metrics for r in runs], ids)
    env, env_differ = _side_by_side([{k: r.env.get(k) for k in ENV_KEYS} for r in runs], ids)
    freezes = [_packages(r.env.get("pip_freeze", "")) for r in runs]
    packages, packages_differ = _side_by_side(freezes, ids)
    out: dict[str, Any] = {
        "runs": [
            {"id": r.id, "experiment": r.experiment, "status": r.status, "reason": r.reason,
             "created_at": r.created_at.isoformat(), "model_versions": r.lineage()["model_versions"]}
            for r in runs
        ],
        "params": params,
        "metrics": metrics,
        "env": env,
        "packages": {k: packages[k] for k in packages_differ},
        "differences": {"params": params_differ, "metrics": metrics_differ, "env": env_differ,
                        "packages": packages_differ},
    }
    if len(runs) == 2:
        a, b = runs
        out["metric_deltas"] = {
            k: b.metrics[k] - a.metrics[k] for k in sorted(set(a.metrics) & set(b.metrics))
        }
    return out
