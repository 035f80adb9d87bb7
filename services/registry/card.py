"""The model card of one version, built from what the registry knows: the version, its run (params,
metrics, gates, captured environment), its reference distributions and its stage history.

Sections: intended use, data, metrics, evaluation gates, fairness, limitations, lineage, stage history;
as JSON (:func:`build_card`) and Markdown (:func:`render_markdown`).
"""

from __future__ import annotations

from typing import Any

from services.registry.views import GateResult, RunView, VersionView, iso


def _gate(run: RunView | None, name: str) -> GateResult | None:
    return next((g for g in run.gates if g.name == name), None) if run else None


def _intended_use(version: VersionView, params: dict[str, str]) -> dict[str, Any]:
    features = version.signature.features
    classes = version.signature.classes
    stated = params.get("intended_use", "")
    summary = stated or (
        f"Predicts {params.get('label') or 'the label'} (classes {', '.join(classes) or 'unspecified'}) from "
        f"{len(features)} feature(s) of events on stream {params.get('stream') or 'unknown'}, for the same "
        "population and feature definitions it was trained on; served through the inference service and "
        "routed by the bandit router."
    )
    return {
        "summary": summary,
        "input": f"`{version.signature.input_name}`: FP32 [N, {len(features)}], raw values of "
        f"{', '.join(features)} in this order; NaN means missing (treated as the training mean)",
        "output": f"`{version.signature.output_name}`: FP32 [N, {len(classes) or 'C'}], class probabilities",
        "out_of_scope": "Decisions about people without human review; data from another stream or with other "
        "feature definitions than the lineage names.",
    }


def _data(version: VersionView, run: RunView | None, reference: dict[str, Any] | None) -> dict[str, Any]:
    params = run.params if run else {}
    metrics = run.metrics if run else {}
    summary = {}
    for name, dist in ((reference or {}).get("features") or {}).items():
        if dist.get("kind") == "numeric":
            summary[name] = {k: dist.get(k) for k in ("mean", "std", "min", "max")}
        else:
            summary[name] = {"categories": len(dist.get("counts") or {})}
    return {
        "dataset_id": version.dataset_id,
        "definitions_hash": run.env.get("definitions_hash", "") if run else "",
        "stream": params.get("stream", ""),
        "features": version.signature.features,
        "label": params.get("label", ""),
        "rows": int(metrics.get("rows", (reference or {}).get("rows", 0)) or 0),
        "train_rows": int(metrics.get("train_rows", 0) or 0),
        "holdout_rows": int(metrics.get("holdout_rows", 0) or 0),
        "recent_rows": int(params.get("recent_rows", "0") or 0),
        "feature_summary": summary,
        "reference_sha256": version.reference_sha256,
    }


def _fairness(run: RunView | None) -> dict[str, Any]:
    gate = _gate(run, "fairness")
    if gate is None:
        return {"evaluated": False, "reason": "no fairness gate was run for this version"}
    if gate.skipped:
        return {"evaluated": False, "reason": gate.reason}
    return {"evaluated": True, "passed": gate.passed, "reason": gate.reason, **gate.details}


def _limitations(version: VersionView, run: RunView | None, data: dict[str, Any]) -> list[str]:
    out = []
    if data["rows"]:
        out.append(f"Trained on {data['rows']} rows of stream {data['stream'] or 'unknown'} (dataset "
                   f"{data['dataset_id'] or 'unknown'}); behaviour on data unlike it is unknown.")
    ranges = [f"{k} in [{v['min']:.4g}, {v['max']:.4g}]" for k, v in data["feature_summary"].items()
              if v.get("min") is not None and v.get("max") is not None]
    robust = _gate(run, "robustness")
    if ranges:
        checked = (" The robustness gate checked that inputs far outside it, NaN and +-inf still give valid "
                   "probabilities." if robust is not None and robust.passed else "")
        out.append(f"Training range: {'; '.join(ranges)}. Outside it the model extrapolates (standardised "
                   f"inputs are clipped).{checked}")
    metrics = run.metrics if run else {}
    if "accuracy" in metrics and "baseline_accuracy" in metrics:
        out.append(f"Holdout accuracy {metrics['accuracy']:.4g} against {metrics['baseline_accuracy']:.4g} for "
                   "always predicting the majority class.")
    fairness = _gate(run, "fairness")
    if fairness is None or fairness.skipped:
        out.append("Fairness across groups was not evaluated"
                   + (f": {fairness.reason}" if fairness is not None else "") + ".")
    holdout = _gate(run, "holdout")
    if holdout is not None and holdout.skipped:
        out.append(f"Not compared with a production version at training time: {holdout.reason}.")
    if run and run.env.get("git_dirty"):
        out.append(f"Trained from code with uncommitted changes (diff sha256 {run.env.get('diff_sha256') or '?'}).")
    return out


def build_card(version: VersionView, run: RunView | None, reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card as JSON-ready data."""
    params = run.params if run else {}
    data = _data(version, run, reference)
    lineage = run.lineage() if run else {"run_id": version.run_id, "dataset_id": version.dataset_id}
    env = run.env if run else {}
    lineage.update({
        "python_version": env.get("python_version", ""),
        "packages": len((env.get("pip_freeze") or "").splitlines()),
        "seed": env.get("seed", 0),
        "hardware": env.get("hardware", ""),
    })
    return {
        "model": version.model,
        "version": version.version,
        "stage": version.stage,
        "created_at": iso(version.created_at),
        "artifact": {"sha256": version.artifact_sha256, "format": version.artifact_format,
                     "size": version.artifact_size},
        "signature": {
            "inputs": {"name": version.signature.input_name, "features": version.signature.features},
            "outputs": {"name": version.signature.output_name, "classes": version.signature.classes},
        },
        "intended_use": _intended_use(version, params),
        "data": data,
        "metrics": run.metrics if run else {},
        "gates": [g.to_dict() for g in run.gates] if run else [],
        "fairness": _fairness(run),
        "limitations": _limitations(version, run, data),
        "training": {"run_id": version.run_id, "experiment": run.experiment if run else "", "params": params,
                     "status": run.status if run else ""},
        "lineage": lineage,
        "stage_history": [t.to_dict() for t in version.transitions],
    }


def _table(rows: dict[str, Any]) -> list[str]:
    if not rows:
        return ["_none recorded_", ""]
    lines = ["| name | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(rows.items())]
    return [*lines, ""]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("|", "\\|")


def _fairness_md(f: dict[str, Any]) -> list[str]:
    if not f.get("evaluated"):
        return [f"Not evaluated: {f.get('reason', '')}", ""]
    lines = [f"- **Sensitive attribute:** `{f.get('attribute', '')}`; **metric:** {f.get('metric', 'accuracy')} gap "
             f"{_fmt(f.get('gap'))} (threshold {_fmt(f.get('max_gap'))}): "
             f"{'passed' if f.get('passed') else 'FAILED'}", ""]
    groups = f.get("groups") or {}
    if groups:
        lines += ["| group | rows | accuracy | positive rate |", "| --- | --- | --- | --- |"]
        lines += [f"| {_fmt(g)} | {v.get('rows')} | {_fmt(v.get('accuracy'))} | {_fmt(v.get('positive_rate'))} |"
                  for g, v in sorted(groups.items())]
        lines.append("")
    return lines


def render_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown for people."""
    lin, data, use, art = card["lineage"], card["data"], card["intended_use"], card["artifact"]
    lines = [
        f"# {card['model']} version {card['version']}",
        "",
        f"- **Stage:** {card['stage']}",
        f"- **Registered:** {card['created_at']}",
        f"- **Artifact:** {art['format']}, {art['size']} bytes, sha256 `{art['sha256']}`",
        f"- **Run:** `{card['training']['run_id']}` in experiment `{card['training']['experiment']}`",
        "",
        "## Intended use",
        "",
        use["summary"],
        "",
        f"- **Input:** {use['input']}",
        f"- **Output:** {use['output']}",
        f"- **Out of scope:** {use['out_of_scope']}",
        "",
        "## Data",
        "",
        f"- **Dataset:** `{data['dataset_id'] or 'unknown'}` from stream `{data['stream'] or 'unknown'}`, label "
        f"`{data['label'] or 'unknown'}`; {data['rows']} rows ({data['train_rows']} train, "
        f"{data['holdout_rows']} holdout)"
        + (f", the most recent {data['recent_rows']}" if data["recent_rows"] else ""),
        f"- **Feature definitions:** `{data['definitions_hash'] or 'unknown'}`",
        "",
    ]
    if data["feature_summary"]:
        lines += ["| feature | mean | std | min | max |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {k} | " + " | ".join(_fmt(v.get(c)) for c in ("mean", "std", "min", "max")) + " |"
                  for k, v in data["feature_summary"].items()]
        lines.append("")
    lines += ["## Metrics", "", *_table(card["metrics"]), "## Evaluation gates", ""]
    if card["gates"]:
        lines += ["| gate | result | reason |", "| --- | --- | --- |"]
        lines += [f"| {g['name']} | {'skipped' if g['skipped'] else 'passed' if g['passed'] else 'FAILED'} | "
                  f"{_fmt(g['reason'] or '-')} |" for g in card["gates"]]
        lines.append("")
    else:
        lines += ["_none recorded_", ""]
    lines += ["## Fairness", "", *_fairness_md(card["fairness"]), "## Limitations", ""]
    lines += [f"- {item}" for item in card["limitations"]] or ["_none recorded_"]
    lines += [
        "",
        "## Lineage",
        "",
        f"- **Run:** `{lin.get('run_id', '')}`",
        f"- **Dataset:** `{lin.get('dataset_id') or 'unknown'}`",
        f"- **Feature definitions:** `{lin.get('definitions_hash') or 'unknown'}`",
        f"- **Code:** `{lin.get('git_commit') or 'unknown'}`"
        + (f" (uncommitted changes, diff sha256 `{lin.get('diff_sha256')}`)" if lin.get("git_dirty") else ""),
        f"- **Python:** {lin.get('python_version') or 'unknown'} with {lin.get('packages', 0)} packages; "
        f"**seed:** {lin.get('seed', 0)}; **hardware:** {lin.get('hardware') or 'unknown'}",
        "",
        "## Training parameters",
        "",
        *_table(card["training"]["params"]),
        "## Stage history",
        "",
        "| when | from | to | who | why |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in card["stage_history"]:
        lines.append(
            f"| {t['time']} | {t['from_stage'] or '-'} | {t['to_stage']} | {_fmt(t['actor'] or '-')} "
            f"| {_fmt(t['reason'] or '-')} |"
        )
    return "\n".join(lines) + "\n"
