"""``mlops``: run the local stack and talk to the services over their REST APIs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from mlops.settings import SERVICES, PlatformSettings, service_settings
from mlops.stack import procs
from mlops.stack.supervisor import StackError, Supervisor

app = typer.Typer(help="The MLOps platform: local stack, models, runs, endpoints, datasets.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models and their versions.", no_args_is_help=True)
runs_app = typer.Typer(help="Training runs.", no_args_is_help=True)
endpoints_app = typer.Typer(help="Router endpoints.", no_args_is_help=True)
datasets_app = typer.Typer(help="Versioned training sets.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")
app.add_typer(endpoints_app, name="endpoints")
app.add_typer(datasets_app, name="datasets")
console = Console()


def _url(service: str, path: str) -> str:
    return f"http://{PlatformSettings().host}:{service_settings(service).http_port}{path}"


def _call(method: str, service: str, path: str, body: Any = None) -> Any:
    try:
        resp = httpx.request(method, _url(service, path), json=body, timeout=30.0)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {service}: {exc}. Is the stack up (`mlops up`)?[/red]")
        raise typer.Exit(2) from exc
    if resp.status_code >= 400:
        console.print(f"[red]{service} answered {resp.status_code}: {resp.text}[/red]")
        raise typer.Exit(1)
    return resp.json()


def _print_json(data: Any) -> None:
    console.print_json(json.dumps(data))


@app.command()
def up(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every service to be ready.")] = 180.0,
    only: Annotated[str, typer.Option(help="Comma-separated services to start (default: all eight).")] = "",
) -> None:
    """Start the broker, redis-server and the eight services; wait until all are ready."""
    sup = Supervisor(report=lambda m: console.print(f"[dim]{m}[/dim]"))
    try:
        sup.up(timeout_s=timeout, only=[s for s in only.split(",") if s] or None)
    except StackError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"[green]stack up[/green]; state in {sup.home}; logs: `mlops logs SERVICE`; stop: `mlops down`")


@app.command()
def down() -> None:
    """Stop every process `mlops up` started."""
    stopped = Supervisor().down()
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command()
def restart(service: str) -> None:
    """Restart one service of the running stack."""
    try:
        proc = Supervisor(report=lambda m: console.print(f"[dim]{m}[/dim]")).restart(service)
    except StackError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"{service} restarted, pid {proc.pid}")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="One JSON object per process.")] = False) -> None:
    """Show each process of the stack: pid, addresses, health."""
    rows = Supervisor().status()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("the stack is not running; start it with `mlops up`")
        return
    table = Table("name", "pid", "http", "grpc", "healthy")
    for r in rows:
        table.add_row(str(r["name"]), str(r["pid"] or "-"), str(r["http"] or "-"), str(r["grpc"] or "-"),
                      "[green]yes[/green]" if r["healthy"] else "[red]no[/red]")
    console.print(table)


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="broker, redis or a service name")],
    lines: Annotated[int, typer.Option("-n", help="Lines to show.")] = 100,
    follow: Annotated[bool, typer.Option("-f", help="Keep printing new lines.")] = False,
) -> None:
    """Print a process's log."""
    path = PlatformSettings().home / "logs" / f"{name}.log"
    if not path.exists():
        console.print(f"[red]no log for {name!r} at {path}[/red]; names: broker, redis, {', '.join(SERVICES)}")
        raise typer.Exit(1)
    print(procs.tail(path, lines))
    if follow:
        with path.open() as f:
            f.seek(0, 2)
            while True:
                line = f.readline()
                if line:
                    print(line, end="")
                else:
                    time.sleep(0.3)


@app.command()
def demo(args: Annotated[list[str] | None, typer.Argument(help="Options for the demo.")] = None) -> None:
    """Run the closed-loop demo (the same as ./scripts/demo)."""
    raise typer.Exit(subprocess.call([sys.executable, "-m", "mlops.demo", *(args or [])]))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context, name: str) -> None:
    """Run a benchmark (the same as ./scripts/bench NAME [--quick] [--json PATH])."""
    raise typer.Exit(subprocess.call([sys.executable, "-m", "mlops.bench", name, *ctx.args]))


@app.command()
def train(
    model: str,
    stream: Annotated[str, typer.Option(help="Source stream of the training set.")],
    features: Annotated[str, typer.Option(help="Comma-separated feature names.")],
    label: Annotated[str, typer.Option(help="Label field.")],
    stage: Annotated[str, typer.Option(help="Stage of the new version.")] = "candidate",
    wait: Annotated[bool, typer.Option(help="Wait for the job to finish.")] = True,
) -> None:
    """Submit a training job to the trainer."""
    job = _call("POST", "trainer", "/v1/training-jobs",
                {"model": model, "stream": stream, "features": features.split(","), "label": label, "stage": stage})
    while wait and job["state"] not in ("succeeded", "failed"):
        time.sleep(1.0)
        job = _call("GET", "trainer", f"/v1/training-jobs/{job['id']}")
        console.print(f"[dim]{job['state']} {job.get('progress', 0):.0%}[/dim]")
    _print_json(job)
    if job["state"] == "failed":
        raise typer.Exit(1)


@models_app.command("list")
def models_list() -> None:
    """Models, their latest versions and aliases."""
    _print_json(_call("GET", "registry", "/v1/models"))


@models_app.command("show")
def models_show(name: str, version: str) -> None:
    """One model version with its lineage."""
    _print_json(_call("GET", "registry", f"/v1/models/{name}/versions/{version}"))


@models_app.command("stage")
def models_stage(name: str, version: str, stage: str, reason: Annotated[str, typer.Option()] = "") -> None:
    """Move a model version to a stage (candidate, shadow, canary, production, archived)."""
    _print_json(_call("POST", "registry", f"/v1/models/{name}/versions/{version}/stage",
                      {"stage": stage, "reason": reason}))


@runs_app.command("show")
def runs_show(run_id: str) -> None:
    """A run: params, metrics, artifacts, lineage."""
    _print_json(_call("GET", "registry", f"/v1/runs/{run_id}"))


@endpoints_app.command("list")
def endpoints_list() -> None:
    """Router endpoints."""
    _print_json(_call("GET", "bandit-router", "/v1/endpoints"))


@endpoints_app.command("show")
def endpoints_show(endpoint: str) -> None:
    """An endpoint's variants, policy and live state."""
    _print_json(_call("GET", "bandit-router", f"/v1/endpoints/{endpoint}"))


@endpoints_app.command("put")
def endpoints_put(
    endpoint: str, spec: Annotated[Path, typer.Argument(help="JSON file with variants and policy")]
) -> None:
    """Declare an endpoint from a JSON file."""
    _print_json(_call("PUT", "bandit-router", f"/v1/endpoints/{endpoint}", json.loads(spec.read_text())))


@datasets_app.command("build")
def datasets_build(
    stream: str,
    features: Annotated[str, typer.Option(help="Comma-separated feature names.")],
    label: Annotated[str, typer.Option(help="Label field.")],
) -> None:
    """Build a versioned training set from the offline store."""
    _print_json(_call("POST", "feature", "/v1/datasets",
                      {"stream": stream, "features": features.split(","), "label": label}))


@datasets_app.command("show")
def datasets_show(dataset_id: str) -> None:
    """A dataset version's card."""
    _print_json(_call("GET", "feature", f"/v1/datasets/{dataset_id}"))


if __name__ == "__main__":
    app()
