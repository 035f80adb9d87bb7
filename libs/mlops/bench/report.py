"""``docs/benchmarks.md`` from one ``./scripts/bench all`` run: every figure with its target, the machine,
and the command that reproduces it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.settings import REPO_ROOT

DOC = REPO_ROOT / "docs" / "benchmarks.md"

BASELINES = {
    "inference": "the same MLP and V2 load generator against a naive per-request FastAPI+torch server, MLServer "
                 "with adaptive batching, a no-op V2 gRPC server (transport ceiling) and the raw batched forward "
                 "pass (compute ceiling), all in the same run",
    "router": "calling inference directly, in the same run",
    "pipeline": "a raw aiokafka relay (consume events.raw, produce unchanged) on the same broker, in the same run",
    "drift": "river's detectors run directly in-process on the same streams",
    "bandit": "a uniform split over the same simulated arms",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value)


def write(results: list[dict[str, Any]], command: str, path: Path = DOC) -> Path:
    machine = results[0]["machine"] if results else {}
    lines = [
        "# Benchmarks",
        "",
        f"Every figure below comes from one run of `{command}` on {datetime.now(UTC).strftime('%Y-%m-%d')}; "
        "each ratio is measured against its baseline in the same run. Reproduce with the same command "
        "(`--quick` for a shorter run). The machine is shared and noisy: compare ratios, not absolute numbers.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()),
        "",
    ]
    for result in results:
        name = result["bench"]
        lines += [f"## {name}", "", f"Baseline: {BASELINES.get(name, 'see docs')}. "
                  f"Reproduce: `./scripts/bench {name} --json .mlops/reports/bench-{name}.json`.", "",
                  "| figure | value | target | met |", "| --- | --- | --- | --- |"]
        for key, value in result["figures"].items():
            t = result["targets"].get(key)
            target = f"{t['direction']} {_fmt(t['target'])}" if t else ""
            met = ("yes" if t["met"] else "**no**") if t else ""
            lines.append(f"| `{key}` | {_fmt(value)} | {target} | {met} |")
        notes = result.get("notes") or []
        if notes:
            lines += ["", *[f"- {n}" for n in notes]]
        lines.append("")
    path.write_text("\n".join(lines))
    return path
