"""``mlops train ...``: training jobs from the command line, with a progress bar while they run."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from mlops.cli.common import call, console, print_json

INHERIT = " Leave out to train as the current production version was trained."


def _summary(job: dict[str, Any]) -> None:
    for gate in job.get("gates") or []:
        if gate["skipped"]:  # one with nothing to check against blocks nothing; another blocks production
            mark = "skipped" if gate.get("not_applicable") else "[yellow]skipped (blocks production)[/yellow]"
        else:
            mark = "[green]passed[/green]" if gate["passed"] else "[red]FAILED[/red]"
        console.print(f"  gate {gate['name']}: {mark} ({gate['reason']})")
    if job["state"] == "succeeded":
        console.print(f"[green]{job['model']} v{job['version']}[/green] registered in {job['spec']['stage']} "
                      f"(run {job['run_id']}, dataset {job['dataset_id']}, holdout accuracy "
                      f"{job['metrics'].get('accuracy', float('nan')):.4f})")
    else:
        console.print(f"[red]job {job['id']} failed[/red]: {job['error']}"
                      + (f" (run {job['run_id']})" if job.get("run_id") else ""))


def train(
    model: str,
    stream: Annotated[str, typer.Option(help="Source stream of the training set." + INHERIT)] = "",
    features: Annotated[str, typer.Option(help="Comma-separated feature names." + INHERIT)] = "",
    label: Annotated[str, typer.Option(help="Label field." + INHERIT)] = "",
    stage: Annotated[str, typer.Option(help="Stage of the new version once it passes the gates.")] = "candidate",
    epochs: Annotated[int, typer.Option(help="Epochs (0: the trainer's default).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed: the same dataset, code and seed give the same metrics.")] = 0,
    recent_rows: Annotated[int, typer.Option(help="Train on the most recent N rows only (0: all).")] = 0,
    sensitive_attribute: Annotated[str, typer.Option(help="Fairness gate: attribute whose groups must be "
                                                          "treated alike.")] = "",
    fairness_max_gap: Annotated[float, typer.Option(help="Fairness gate threshold (0: the default).")] = 0.0,
    processes: Annotated[int, typer.Option(help="Data-parallel processes (torchrun; 0: the default).")] = 0,
    reason: Annotated[str, typer.Option(help="Why; recorded with the run and the version.")] = "",
    force: Annotated[bool, typer.Option(help="With --stage production: register although a gate was skipped "
                                             "(needs --reason and the promote permission; audited).")] = False,
    request_id: Annotated[str, typer.Option(help="Idempotency key: a retry returns the same job.")] = "",
    wait: Annotated[bool, typer.Option(help="Wait for the job to finish, with a progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the finished job as JSON.")] = False,
) -> None:
    """Submit a training job to the trainer and follow it.

    The trainer registers new versions at ``candidate`` only (its own token may do no more); a higher
    ``--stage`` is set here afterwards, with your token, so the stage change is yours in the audit trail
    and is checked against your role and the version's gates."""
    target = stage.strip().lower() or "candidate"
    if target != "candidate" and not wait:
        raise typer.BadParameter("--stage above candidate needs --wait (the stage is set once the version exists)",
                                 param_hint="--stage")
    body = {"model": model, "stream": stream, "features": [f for f in features.split(",") if f], "label": label,
            "stage": "candidate", "epochs": epochs, "seed": seed, "recent_rows": recent_rows,
            "sensitive_attribute": sensitive_attribute, "fairness_max_gap": fairness_max_gap,
            "processes": processes, "reason": reason, "request_id": request_id, "force": force}
    job = call("POST", "trainer", "/v1/training-jobs", body)
    if wait and job["state"] not in ("succeeded", "failed"):
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=as_json) as bar:
            task = bar.add_task(f"training {model} (job {job['id'][:12]})", total=1.0)
            while job["state"] not in ("succeeded", "failed"):
                time.sleep(0.5)
                job = call("GET", "trainer", f"/v1/training-jobs/{job['id']}")
                bar.update(task, completed=job.get("progress", 0.0),
                           description=f"training {model} ({job['state']})")
            bar.update(task, completed=1.0 if job["state"] == "succeeded" else job.get("progress", 0.0))
    if wait and not as_json:
        _summary(job)
    if job["state"] == "succeeded" and target != "candidate":
        changed = call("POST", "registry", f"/v1/models/{model}/versions/{job['version']}/stage",
                       {"stage": target, "reason": reason or f"mlops train --stage {target}", "force": force})
        job["stage_change"] = changed
        if not as_json:
            console.print(f"[green]{model} v{job['version']}[/green] moved to {changed.get('stage', target)}")
    if as_json or not wait:
        print_json(job)
    if job["state"] == "failed":
        raise typer.Exit(1)
