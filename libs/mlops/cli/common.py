"""Helpers the CLI's command groups share: calling a service's REST API, printing JSON."""

from __future__ import annotations

import json
from typing import Any

import httpx
import typer
from rich.console import Console

from mlops.auth.local import local_token
from mlops.stack import locate

console = Console()


def url(service: str, path: str) -> str:
    """``service``'s REST URL as :mod:`mlops.stack.locate` finds it (this shell's settings, else the running
    stack's recorded ones); ``Client()`` finds it the same way."""
    return f"{locate.http_url(service)}{path}"


def auth_headers() -> dict[str, str]:
    token = local_token()
    return {"authorization": f"Bearer {token}"} if token else {}


def call(method: str, service: str, path: str, body: Any = None) -> Any:
    try:
        resp = httpx.request(method, url(service, path), json=body, timeout=30.0, headers=auth_headers())
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {service}: {exc}. Is the stack up (`mlops up`)?[/red]")
        raise typer.Exit(2) from exc
    if resp.status_code >= 400:
        console.print(f"[red]{service} answered {resp.status_code}: {resp.text}[/red]")
        raise typer.Exit(1)
    return resp.json()


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data))
