"""``mlops``: run the local stack and talk to the services over their REST APIs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Annotated

import typer
from rich.table import Table

from mlops.cli.admin_cmds import audit_cmd, tokens_app
from mlops.cli.archive_cmds import predictions_cmd
from mlops.cli.common import console
from mlops.cli.feature_cmds import datasets_app
from mlops.cli.registry_cmds import models_app, runs_app
from mlops.cli.router_cmds import endpoints_app
from mlops.cli.schema_cmds import schema_app
from mlops.cli.trainer_cmds import train
from mlops.settings import SERVICES, PlatformSettings
from mlops.stack import procs
from mlops.stack.supervisor import StackError, Supervisor

app = typer.Typer(help="The MLOps platform: local stack, models, runs, endpoints, datasets.", no_args_is_help=True)


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


app.command()(train)
app.add_typer(models_app, name="models")
app.add_typer(tokens_app, name="tokens")
app.command("audit")(audit_cmd)
app.command("predictions")(predictions_cmd)
app.add_typer(runs_app, name="runs")
app.add_typer(endpoints_app, name="endpoints")
app.add_typer(datasets_app, name="datasets")
app.add_typer(schema_app, name="schema")

if __name__ == "__main__":
    app()
