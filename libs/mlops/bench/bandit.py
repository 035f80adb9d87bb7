"""``./scripts/bench bandit``: regret curves of every router policy on the same simulated arms.

Two scenarios, each run over several seeds with rewards arriving 50 requests after their decision:
``conversion`` (three arms converting at 5%, 10% and 17%: the classic A/B/C test) and ``context`` (two
arms whose better one depends on a context feature: where LinUCB earns its keep). The policies are the
router's own objects (``services.bandit_router.simulate``, run as a subprocess because libs/ never
imports services/): the bandits as algorithms, and ``thompson_promote``, Thompson as an endpoint runs it
by default -- every arm gets its 100-reward minimum sample first (what an automatic promotion needs),
then the winner is promoted and takes every later request.

Writes a table, ``bench-bandit-regret.png`` (cumulative regret against requests, per policy and
scenario) and the curves as JSON under ``$MLOPS_HOME/reports/bench/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mlops.bench.common import Result
from mlops.settings import REPO_ROOT, PlatformSettings

DELAY = 50


def _simulate(scenario: str, requests: int, seeds: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "services.bandit_router.simulate", "--scenario", scenario,
         "--requests", str(requests), "--seeds", str(seeds), "--delay", str(DELAY)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=1800,
    )
    return json.loads(out.stdout)


def _plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.5))
    for ax, run in zip(axes, runs, strict=True):
        for label, data in run["policies"].items():
            ax.plot(run["x"], data["regret"], label=label, linewidth=2 if label.startswith("thompson") else 1.2)
        ax.set_title(f"{run['scenario']}: arms {run['arms']}, reward delay {run['delay']} requests", fontsize=9)
        ax.set_xlabel("requests")
        ax.set_ylabel(f"cumulative regret (mean of {run['seeds']} seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(run: dict[str, Any]) -> Table:
    uniform = run["policies"]["uniform"]["final_regret"]
    table = Table("policy", "regret", "vs uniform", "best-arm share (last 10%)", "requests to 90% best",
                  "requests to promotion", title=f"{run['scenario']} ({run['requests']:,} requests x {run['seeds']})")
    for label, data in run["policies"].items():
        reached, promoted = data["requests_to_90pct_best"], data["requests_to_promotion"]
        table.add_row(label, f"{data['final_regret']:.1f}", f"{data['final_regret'] / uniform:.1%}",
                      f"{data['best_share_last_10pct']:.1%}", "-" if reached is None else f"{reached:,.0f}",
                      "-" if promoted is None else f"{promoted:,.0f}")
    return table


def run(quick: bool, console: Console) -> Result:
    result = Result("bandit")
    requests, seeds = (4000, 3) if quick else (10_000, 10)
    runs = []
    for scenario in ("conversion", "context"):
        console.print(f"simulating {scenario}: {requests:,} requests x {seeds} seeds per policy")
        runs.append(_simulate(scenario, requests, seeds))
    for r in runs:
        console.print(_table(r))
    conversion, context = runs
    thompson, uniform = conversion["policies"]["thompson"], conversion["policies"]["uniform"]
    result.figure("regret_reduction_vs_uniform_thompson", 1.0 - thompson["final_regret"] / uniform["final_regret"])
    result.target("regret_reduction_vs_uniform_thompson", 0.8)
    reached = thompson["requests_to_90pct_best"]
    result.figure("requests_to_90pct_best_thompson", float("nan") if reached is None else reached)
    result.target("requests_to_90pct_best_thompson", 2000, higher_is_better=False)
    for label, data in conversion["policies"].items():
        result.figure(f"regret_{label}", data["final_regret"])
    promoting = conversion["policies"]["thompson_promote"]
    result.figure("regret_reduction_vs_uniform_thompson_promote",
                  1.0 - promoting["final_regret"] / uniform["final_regret"])
    if promoting["requests_to_promotion"] is not None:
        result.figure("requests_to_promotion_thompson", promoting["requests_to_promotion"])
    linucb, best_blind = context["policies"]["linucb"], min(
        d["final_regret"] for k, d in context["policies"].items() if k != "linucb")
    result.figure("context_regret_linucb", linucb["final_regret"])
    result.figure("context_regret_reduction_linucb_vs_best_context_blind", 1.0 - linucb["final_regret"] / best_blind)

    out = PlatformSettings().home / "reports" / "bench"
    png = out / "bench-bandit-regret.png"
    _plot(runs, png)
    (out / "bench-bandit-curves.json").write_text(json.dumps(runs, indent=1))
    result.notes.append(f"regret curves: {png}")
    result.notes.append(f"conversion arms {conversion['arms']}; context arms (logistic weights) {context['arms']}; "
                        f"rewards arrive {DELAY} requests late; median over seeds for request counts")
    console.print(f"wrote {png}")
    return result
