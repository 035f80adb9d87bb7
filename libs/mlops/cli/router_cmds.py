"""``mlops endpoints ...``: router endpoints from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mlops.cli.common import call, print_json

endpoints_app = typer.Typer(help="Router endpoints.", no_args_is_help=True)


@endpoints_app.command("list")
def endpoints_list() -> None:
    """Router endpoints."""
    print_json(call("GET", "bandit-router", "/v1/endpoints"))


@endpoints_app.command("show")
def endpoints_show(endpoint: str) -> None:
    """An endpoint's variants, policy and live state."""
    print_json(call("GET", "bandit-router", f"/v1/endpoints/{endpoint}"))


@endpoints_app.command("put")
def endpoints_put(
    endpoint: str, spec: Annotated[Path, typer.Argument(help="JSON file with variants and policy")]
) -> None:
    """Declare an endpoint from a JSON file."""
    print_json(call("PUT", "bandit-router", f"/v1/endpoints/{endpoint}", json.loads(spec.read_text())))
