"""The demo's record: ``summary.json``, PNG charts and an HTML report under ``.mlops/reports/demo-<time>/``."""

from __future__ import annotations

import html
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _marks(ax: Any, marks: dict[str, float]) -> None:
    colors = {"drift injected": "black", "drift detected": "tab:red", "candidate registered": "tab:orange",
              "promoted": "tab:green"}
    for label, t in marks.items():
        ax.axvline(t, linestyle="--", linewidth=1, color=colors.get(label, "gray"), label=label)


def _accuracy_chart(points: dict[str, list[tuple[float, float]]], path: Path, marks: dict[str, float]) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    for version, series in sorted(points.items()):
        if series:
            ax.plot([t for t, _ in series], [a for _, a in series], label=f"v{version}")
    ax.set_xlabel("seconds since the demo started")
    ax.set_ylabel("online accuracy (rolling)")
    ax.set_ylim(0, 1)
    _marks(ax, marks)
    ax.legend(fontsize=8)
    ax.set_title("Online accuracy per model version")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _traffic_chart(points: dict[str, list[tuple[float, float]]], path: Path, marks: dict[str, float]) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    for version, series in sorted(points.items()):
        if series:
            ax.plot([t for t, _ in series], [s for _, s in series], label=f"v{version}")
    ax.set_xlabel("seconds since the demo started")
    ax.set_ylabel("traffic share")
    ax.set_ylim(0, 1.05)
    _marks(ax, marks)
    ax.legend(fontsize=8)
    ax.set_title("Traffic share per model version")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _drift_chart(points: dict[str, list[tuple[float, float]]], path: Path, marks: dict[str, float]) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, series in sorted(points.items()):
        if series:
            ax.plot([t for t, _ in series], [v for _, v in series], label=name)
    ax.set_xlabel("seconds since the demo started")
    ax.set_ylabel("drift score")
    _marks(ax, marks)
    ax.legend(fontsize=8)
    ax.set_title("Drift scores of the serving version, with the alert and the promotion")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(reports_root: Path, summary: dict[str, Any], timeline: list[dict[str, Any]],
          accuracy: dict[str, list[tuple[float, float]]], traffic: dict[str, list[tuple[float, float]]],
          drift: dict[str, list[tuple[float, float]]] | None = None, marks: dict[str, float] | None = None) -> Path:
    out = reports_root / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({**summary, "timeline": timeline}, indent=2, default=str))
    _accuracy_chart(accuracy, out / "accuracy.png", marks or {})
    _traffic_chart(traffic, out / "traffic.png", marks or {})
    _drift_chart(drift or {}, out / "drift.png", marks or {})
    rows = "\n".join(
        f"<tr><td>{html.escape(str(e['at']))}</td><td>{html.escape(e['event'])}</td></tr>" for e in timeline
    )
    facts = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(json.dumps(v, default=str))}</td></tr>"
        for k, v in summary.items()
    )
    (out / "report.html").write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>MLOps platform demo</title>
<style>body{{font-family:sans-serif;margin:2em}}
td,th{{padding:4px 10px;text-align:left;border-bottom:1px solid #ddd}}</style>
</head><body>
<h1>Loan approval: the platform's loop</h1>
<h2>Summary</h2><table>{facts}</table>
<h2>Charts</h2><img src="traffic.png" alt="traffic share"><img src="accuracy.png" alt="accuracy">
<img src="drift.png" alt="drift scores">
<h2>Timeline</h2><table><tr><th>time</th><th>event</th></tr>{rows}</table>
</body></html>
""")
    return out
