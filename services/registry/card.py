"""A minimal model card for one version, built from what the registry knows: lineage, metrics, stages."""

from __future__ import annotations

from typing import Any

from services.registry.views import RunView, VersionView, iso


def build_card(version: VersionView, run: RunView | None) -> dict[str, Any]:
    """The card as JSON-ready data."""
    env = run.env if run else {}
    return {
        "model": version.model,
        "version": version.version,
        "stage": version.stage,
        "created_at": iso(version.created_at),
        "artifact": {
            "sha256": version.artifact_sha256,
            "format": version.artifact_format,
            "size": version.artifact_size,
        },
        "signature": {
            "inputs": {"name": version.signature.input_name, "features": version.signature.features},
            "outputs": {"name": version.signature.output_name, "classes": version.signature.classes},
        },
        "training": {
            "run_id": version.run_id,
            "experiment": run.experiment if run else "",
            "params": run.params if run else {},
            "metrics": run.metrics if run else {},
        },
        "lineage": {
            "dataset_id": version.dataset_id,
            "git_commit": env.get("git_commit", ""),
            "git_dirty": env.get("git_dirty", False),
            "python_version": env.get("python_version", ""),
            "seed": env.get("seed", 0),
            "hardware": env.get("hardware", ""),
        },
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


def render_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown for people."""
    lin = card["lineage"]
    sig = card["signature"]
    art = card["artifact"]
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
        f"Classifier over {len(sig['inputs']['features'])} features; input `{sig['inputs']['name']}` "
        f"(FP32 [N, {len(sig['inputs']['features'])}], raw feature values in this order: "
        f"{', '.join(sig['inputs']['features'])}); output `{sig['outputs']['name']}` "
        f"(class probabilities for classes {', '.join(sig['outputs']['classes']) or 'unspecified'}).",
        "",
        "## Metrics",
        "",
        *_table(card["training"]["metrics"]),
        "## Training parameters",
        "",
        *_table(card["training"]["params"]),
        "## Lineage",
        "",
        f"- **Dataset:** `{lin['dataset_id'] or 'unknown'}`",
        f"- **Code:** `{lin['git_commit'] or 'unknown'}`{' (uncommitted changes)' if lin['git_dirty'] else ''}",
        f"- **Python:** {lin['python_version'] or 'unknown'}; **seed:** {lin['seed']}; "
        f"**hardware:** {lin['hardware'] or 'unknown'}",
        "",
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
