"""``mlops predictions``: the prediction archive from the command line."""

from __future__ import annotations

from typing import Annotated

import typer

from mlops.cli.common import call, print_json


def predictions_cmd(
    prediction_id: Annotated[str | None, typer.Option("--id", help="One prediction.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    version: Annotated[str | None, typer.Option(help="Only this version (with --model).")] = None,
    start: Annotated[str | None, typer.Option(help="ISO time, inclusive.")] = None,
    end: Annotated[str | None, typer.Option(help="ISO time, exclusive.")] = None,
    limit: Annotated[int, typer.Option(help="Most predictions.")] = 20,
) -> None:
    """Archived predictions with their feedback, newest first."""
    query = {"prediction_id": prediction_id, "model": model, "version": version, "start": start, "end": end,
             "limit": limit}
    params = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
    print_json(call("GET", "feedback", f"/v1/predictions?{params}"))
