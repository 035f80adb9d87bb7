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


def _chart(points: dict[str, list[tuple[float, float]]], path: Path, marks: dict[str, float], *, title: str,
           ylabel: str, ylim: tuple[float, float] | None = None, prefix: str = "") -> None:
    """One line per series over seconds since the demo started, with the loop's steps marked."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, series in sorted(points.items()):
        if series:
            ax.plot([t for t, _ in series], [v for _, v in series], label=f"{prefix}{name}")
    ax.set_xlabel("seconds since the demo started")
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    _marks(ax, marks)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(reports_root: Path, summary: dict[str, Any], timeline: list[dict[str, Any]],
          accuracy: dict[str, list[tuple[float, float]]], traffic: dict[str, list[tuple[float, float]]],
          drift: dict[str, list[tuple[float, float]]] | None = None, marks: dict[str, float] | None = None) -> Path:
    out = reports_root / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({**summary, "timeline": timeline}, indent=2, default=str))
    marks = marks or {}
    _chart(accuracy, out / "accuracy.png", marks, title="Online accuracy per model version",
           ylabel="online accuracy (rolling)", ylim=(0, 1), prefix="v")
    _chart(traffic, out / "traffic.png", marks, title="Traffic share per model version", ylabel="traffic share",
           ylim=(0, 1.05), prefix="v")
    _chart(drift or {}, out / "drift.png", marks,
           title="Drift scores of the serving version, with the alert and the promotion", ylabel="drift score")
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
