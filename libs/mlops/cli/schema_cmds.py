"""``mlops schema ...``: stream schemas from the command line. ``plan`` shows what a new schema would change
(fields added, dropped, retyped, and the serving model versions that read them) without storing it, as
``feast plan`` does; ``apply`` stores it, and a change that drops or retypes a field a serving version reads
is refused with the same diff unless ``--force --reason``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
import typer
from rich.table import Table

from mlops.cli.common import auth_headers, call, console, print_json, url

schema_app = typer.Typer(help="Stream schemas: show, plan a change, apply it.", no_args_is_help=True)

SchemaFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The schema as JSON.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _put(stream: str, path: Path, **query: Any) -> tuple[int, dict[str, Any]]:
    """PUT the schema; the status and the body (an error's too: a refusal carries the diff)."""
    try:
        body = json.loads(path.read_text())
    except ValueError as exc:
        console.print(f"[red]{path} is not JSON: {exc}[/red]")
        raise typer.Exit(2) from exc
    target = url("ingest", f"/v1/streams/{stream}/schema") + "?" + urlencode(
        {k: str(v).lower() if isinstance(v, bool) else v for k, v in query.items()})
    try:
        resp = httpx.put(target, json=body, headers=auth_headers(), timeout=30.0)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach ingest: {exc}. Is the stack up (`mlops up`)?[/red]")
        raise typer.Exit(2) from exc
    try:
        return resp.status_code, resp.json()
    except ValueError:
        return resp.status_code, {"error": {"code": "unknown", "message": resp.text}}


def show_changes(changes: dict[str, Any]) -> None:
    """The diff as a table: one row per field added, dropped or retyped, with who reads it."""
    table = Table("field", "change", "read by (serving versions)",
                  title=f"stream {changes['stream']} (from schema version {changes['from_version'] or 'none'})")
    read_by = changes.get("read_by") or {}
    rows = [(f, "[green]+ added[/green]") for f in changes["added"]]
    rows += [(f, "[red]- dropped[/red]") for f in changes["dropped"]]
    rows += [(r["field"], f"[yellow]~ {r['from']} -> {r['to']}[/yellow]") for r in changes["retyped"]]
    for name, change in rows:
        table.add_row(name, change, ", ".join(read_by.get(name, [])) or "-")
    console.print(table if rows else f"stream {changes['stream']}: no field added, dropped or retyped")
    if changes.get("breaking"):
        console.print("[red]breaking:[/red] a serving model version reads a field this drops or retypes; "
                      "`mlops schema apply` refuses it unless --force --reason")


@schema_app.command("show")
def schema_show(stream: str) -> None:
    """The stream's stored schema."""
    print_json(call("GET", "ingest", f"/v1/streams/{stream}/schema"))


@schema_app.command("plan")
def schema_plan(stream: str, path: SchemaFile, as_json: JsonFlag = False) -> None:
    """What storing this schema would change, and which serving versions read what it drops; stores nothing."""
    status, body = _put(stream, path, dry_run=True)
    if status >= 400:
        console.print(f"[red]ingest refused ({status}) {body['error']['code']}: {body['error']['message']}[/red]")
        raise typer.Exit(1)
    if as_json:
        print_json(body["changes"])
    else:
        show_changes(body["changes"])


@schema_app.command("apply")
def schema_apply(
    stream: str,
    path: SchemaFile,
    force: Annotated[bool, typer.Option(help="Store it although a serving version reads a field it drops or "
                                             "retypes (needs --reason; audited as schema.forced).")] = False,
    reason: Annotated[str, typer.Option(help="Why; needed with --force.")] = "",
) -> None:
    """Store the schema as the stream's next version (refused, with the diff, if it breaks a serving model)."""
    status, body = _put(stream, path, force=force, reason=reason)
    if status >= 400:
        error = body.get("error") or {}
        console.print(f"[red]ingest refused ({status}) {error.get('code')}: {error.get('message')}[/red]",
                      soft_wrap=True)
        if isinstance(error.get("details"), dict) and "dropped" in error["details"]:
            show_changes(error["details"])
        raise typer.Exit(1)
    show_changes(body["changes"])
    console.print(f"stored schema version {body['version']} of stream {stream}")
