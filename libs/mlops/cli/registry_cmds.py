"""``mlops models ...`` and ``mlops runs ...``: the registry from the command line."""

from __future__ import annotations

from typing import Annotated

import typer

from mlops.cli.common import call, print_json

models_app = typer.Typer(help="Registered models and their versions.", no_args_is_help=True)
runs_app = typer.Typer(help="Training runs.", no_args_is_help=True)


@models_app.command("list")
def models_list() -> None:
    """Models, their latest versions and aliases."""
    print_json(call("GET", "registry", "/v1/models"))


@models_app.command("show")
def models_show(name: str, version: str) -> None:
    """One model version with its lineage."""
    print_json(call("GET", "registry", f"/v1/models/{name}/versions/{version}"))


@models_app.command("stage")
def models_stage(name: str, version: str, stage: str, reason: Annotated[str, typer.Option()] = "") -> None:
    """Move a model version to a stage (candidate, shadow, canary, production, archived)."""
    print_json(call("POST", "registry", f"/v1/models/{name}/versions/{version}/stage",
                      {"stage": stage, "reason": reason}))


@runs_app.command("show")
def runs_show(run_id: str) -> None:
    """A run: params, metrics, artifacts, lineage."""
    print_json(call("GET", "registry", f"/v1/runs/{run_id}"))
