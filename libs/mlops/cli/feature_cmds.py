"""``mlops datasets ...``: versioned training sets from the command line."""

from __future__ import annotations

from typing import Annotated

import typer

from mlops.cli.common import call, print_json

datasets_app = typer.Typer(help="Versioned training sets.", no_args_is_help=True)


@datasets_app.command("build")
def datasets_build(
    stream: str,
    features: Annotated[str, typer.Option(help="Comma-separated feature names.")],
    label: Annotated[str, typer.Option(help="Label field.")],
) -> None:
    """Build a versioned training set from the offline store."""
    print_json(call("POST", "feature", "/v1/datasets",
                      {"stream": stream, "features": features.split(","), "label": label}))


@datasets_app.command("show")
def datasets_show(dataset_id: str) -> None:
    """A dataset version's card."""
    print_json(call("GET", "feature", f"/v1/datasets/{dataset_id}"))
