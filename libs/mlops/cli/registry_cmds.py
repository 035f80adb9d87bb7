"""``mlops models ...`` and ``mlops runs ...``: the registry from the command line.

Changes (promote, stage, rollback) are recorded with the actor ``cli:<user>``.
"""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from mlops.cli.common import auth_headers, call, console, print_json, url

models_app = typer.Typer(help="Registered models and their versions.", no_args_is_help=True)
runs_app = typer.Typer(help="Training runs.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ForceFlag = Annotated[bool, typer.Option(help="To production although a gate of the version's run was skipped or "
                                              "failed (needs --reason; audited as stage.forced).")]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _send(method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    """A registry call; changes go as this user (the registry records who made them). Errors exit."""
    try:
        resp = httpx.request(method, url("registry", path), json=body,
                             headers={"X-Mlops-Actor": _actor(), **auth_headers()}, timeout=30.0)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach registry: {exc}. Is the stack up (`mlops up`)?[/red]")
        raise typer.Exit(2) from exc
    if resp.status_code >= 400:
        try:
            err = resp.json()["error"]
            message = f"{err['code']}: {err['message']}"
        except (ValueError, KeyError, TypeError):
            message = resp.text
        console.print(f"[red]registry refused ({resp.status_code}) {message}[/red]", soft_wrap=True)
        raise typer.Exit(1)
    return resp


def _change(path: str, body: dict[str, Any]) -> Any:
    return _send("POST", path, body).json()


def _text(path: str) -> str:
    return _send("GET", path).text


def _moved(view: dict[str, Any]) -> None:
    last = (view.get("transitions") or [{}])[-1]
    console.print(f"{view['model']} v{view['version']}: {last.get('from_stage') or '-'} -> [bold]{view['stage']}"
                  f"[/bold] by {last.get('actor') or '-'} ({last.get('reason') or 'no reason given'})")


@models_app.command("list")
def models_list(as_json: JsonFlag = False) -> None:
    """Models, their versions by stage, and aliases."""
    models = call("GET", "registry", "/v1/models")["models"]
    if as_json:
        print_json(models)
        return
    table = Table("model", "latest", "production", "candidate", "shadow", "canary", "archived")
    for m in models:
        by_stage: dict[str, list[str]] = {}
        for v in m["versions"]:
            by_stage.setdefault(v["stage"], []).append(v["version"])
        table.add_row(m["name"], m["latest_version"] or "-",
                      *[", ".join(by_stage.get(s, [])) or "-"
                        for s in ("production", "candidate", "shadow", "canary", "archived")])
    console.print(table if models else "no models registered yet")


@models_app.command("show")
def models_show(name: str, version: str) -> None:
    """One model version: stage, artifact, signature, stage history."""
    print_json(call("GET", "registry", f"/v1/models/{name}/versions/{version}"))


@models_app.command("promote")
def models_promote(
    name: str,
    version: str,
    to: Annotated[str, typer.Option("--to", help="candidate, shadow, canary, production or archived.")],
    reason: Annotated[str, typer.Option(help="Why; recorded with the transition.")] = "",
    force: ForceFlag = False,
) -> None:
    """Move a version to a stage; to production, the previous production version is archived. A version whose
    run has a gate that was skipped or failed goes to production only with --force and a --reason."""
    _moved(_change(f"/v1/models/{name}/versions/{version}/stage", {"stage": to, "reason": reason, "force": force}))


@models_app.command("stage")
def models_stage(name: str, version: str, stage: str, reason: Annotated[str, typer.Option()] = "",
                 force: ForceFlag = False) -> None:
    """Move a model version to a stage (the same as `promote --to STAGE`)."""
    _moved(_change(f"/v1/models/{name}/versions/{version}/stage", {"stage": stage, "reason": reason, "force": force}))


@models_app.command("rollback")
def models_rollback(
    name: str, reason: Annotated[str, typer.Option(help="Why; recorded with the transitions.")] = ""
) -> None:
    """Put the previous production version back in production, in one step."""
    _moved(_change(f"/v1/models/{name}/rollback", {"reason": reason}))


@models_app.command("card")
def models_card(name: str, version: str, as_json: JsonFlag = False) -> None:
    """The model card: intended use, data, metrics, gates, fairness, limitations, lineage."""
    if as_json:
        card = call("GET", "registry", f"/v1/models/{name}/versions/{version}/card")
        card.pop("markdown", None)
        print_json(card)
    else:
        print(_text(f"/v1/models/{name}/versions/{version}/card?format=markdown"))


@models_app.command("lineage")
def models_lineage(name: str, version: str) -> None:
    """version -> run -> dataset version -> feature definitions -> code commit."""
    print_json(call("GET", "registry", f"/v1/models/{name}/versions/{version}/lineage"))


@runs_app.command("show")
def runs_show(run_id: str) -> None:
    """A run: params, metrics and their history, captured environment, gates, lineage."""
    print_json(call("GET", "registry", f"/v1/runs/{run_id}"))


@runs_app.command("list")
def runs_list(experiment: str, as_json: JsonFlag = False) -> None:
    """The runs of an experiment (experiments are named after their model)."""
    runs = call("GET", "registry", f"/v1/experiments/{experiment}/runs")["runs"]
    if as_json:
        print_json(runs)
        return
    table = Table("run", "status", "created", "accuracy", "dataset", "versions", "reason")
    for r in runs:
        acc = r["metrics"].get("accuracy")
        table.add_row(r["id"], r["status"], (r["created_at"] or "")[:19], f"{acc:.4f}" if acc is not None else "-",
                      r["env"]["dataset_id"] or "-", ", ".join(r["lineage"]["model_versions"]) or "-",
                      (r.get("reason") or "")[:60])
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "[dim]-[/dim]"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 44 else text[:20] + "..." + text[-20:]


@runs_app.command("compare")
def runs_compare(runs: Annotated[list[str], typer.Argument(help="Two or more run ids.")],
                 as_json: JsonFlag = False) -> None:
    """Params, metrics and environment of runs side by side; differences in bold."""
    if len(runs) < 2:
        console.print("[red]give at least two run ids[/red]")
        raise typer.Exit(2)
    query = "&".join(f"run={r}" for r in runs)
    out = call("GET", "registry", f"/v1/runs/compare?{query}")
    if as_json:
        print_json(out)
        return
    ids = [r["id"] for r in out["runs"]]
    for section in ("params", "metrics", "env", "packages"):
        rows = out[section]
        if not rows:
            continue
        differ = set(out["differences"][section])
        table = Table(section, *[i[:12] for i in ids], *(["delta"] if section == "metrics" and len(ids) == 2 else []),
                      title=section)
        for key, values in rows.items():
            cells = [_cell(values.get(i)) for i in ids]
            if section == "metrics" and len(ids) == 2:
                delta = out["metric_deltas"].get(key)
                cells.append(f"{delta:+.6g}" if delta is not None else "")
            name = f"[bold]{key}[/bold]" if key in differ else key
            table.add_row(name, *cells)
        console.print(table)
