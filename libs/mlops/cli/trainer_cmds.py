"""``mlops train ...``: training jobs from the command line."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from mlops.cli.common import call, console, print_json


def train(
    model: str,
    stream: Annotated[str, typer.Option(help="Source stream of the training set.")],
    features: Annotated[str, typer.Option(help="Comma-separated feature names.")],
    label: Annotated[str, typer.Option(help="Label field.")],
    stage: Annotated[str, typer.Option(help="Stage of the new version.")] = "candidate",
    wait: Annotated[bool, typer.Option(help="Wait for the job to finish.")] = True,
) -> None:
    """Submit a training job to the trainer."""
    job = call("POST", "trainer", "/v1/training-jobs",
                {"model": model, "stream": stream, "features": features.split(","), "label": label, "stage": stage})
    while wait and job["state"] not in ("succeeded", "failed"):
        time.sleep(1.0)
        job = call("GET", "trainer", f"/v1/training-jobs/{job['id']}")
        console.print(f"[dim]{job['state']} {job.get('progress', 0):.0%}[/dim]")
    print_json(job)
    if job["state"] == "failed":
        raise typer.Exit(1)



