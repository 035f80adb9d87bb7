"""``mlops endpoints list|show|put``: router endpoints from the command line.

``show`` prints the live state: per variant its role, traffic share (observed and what the policy gives
it now), rewards, mean with its 95% interval, probability of being best, estimated regret, errors and
p99 latency; then the endpoint's events (arms added, promotions, rollbacks). ``--json`` prints the
REST answer instead.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mlops.cli.common import call, console, print_json

endpoints_app = typer.Typer(help="Router endpoints: variants, traffic policy, live state.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _num(value: Any, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def _target(v: dict[str, Any]) -> str:
    return f"{v['model']}:{v['version']}" if v.get("version") else f"{v['model']}@{v.get('alias') or 'production'}"


@endpoints_app.command("list")
def endpoints_list(as_json: JsonFlag = False) -> None:
    """Router endpoints, their policies and variants."""
    data = call("GET", "bandit-router", "/v1/endpoints")
    if as_json:
        print_json(data)
        return
    table = Table("endpoint", "policy", "variants", "revision", title="endpoints")
    for e in data["endpoints"]:
        variants = ", ".join(f"{v['name']} ({_target(v)})" for v in e["variants"])
        table.add_row(e["endpoint"], e["policy"]["type"], variants, str(e.get("revision", "")))
    console.print(table)


def state_tables(state: dict[str, Any]) -> list[Table]:
    """The live state as rich tables: variants, then events."""
    title = (f"{state['endpoint']}: {state['policy']['type']}, {state['status']}, {state['decisions']:,} decisions, "
             f"{state['rewards']:,} rewards, regret {_num(state.get('regret'), '{:.1f}')}")
    variants = Table("variant", "target", "role", "share", "target share", "rewards", "pending", "mean [95%]",
                     "P(best)", "regret", "errors", "p99 ms", title=title)
    for v in state["variants"]:
        interval = (f"{_num(v['reward_mean'])} [{_num(v['reward_ci_low'])}, {_num(v['reward_ci_high'])}]"
                    if v.get("reward_mean") is not None else "-")
        variants.add_row(
            v["name"], _target(v), v["role"], f"{v['traffic_share']:.1%}",
            "-" if v.get("target_share") is None else f"{v['target_share']:.1%}",
            f"{v['rewards']:,}", f"{v['pending']:,}", interval, _num(v.get("prob_best")),
            _num(v.get("regret"), "{:.1f}"), f"{v['errors']:,}", _num(v.get("p99_ms"), "{:g}"),
        )
    events = Table("time (UTC)", "event", "details", title="events")
    for e in state.get("events", [])[-20:]:
        at = datetime.fromtimestamp(e["time"], tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        events.add_row(at, e["kind"], json.dumps(e.get("details") or {}, sort_keys=True)[:200])
    return [variants, events]


@endpoints_app.command("show")
def endpoints_show(endpoint: str, as_json: JsonFlag = False) -> None:
    """An endpoint's variants, policy and live state."""
    state = call("GET", "bandit-router", f"/v1/endpoints/{endpoint}")
    if as_json:
        print_json(state)
        return
    for table in state_tables(state):
        console.print(table)


@endpoints_app.command("put")
def endpoints_put(
    endpoint: str,
    spec: Annotated[Path, typer.Argument(help="JSON file: {\"variants\": [...], \"policy\": {\"type\", \"params\"}}")],
) -> None:
    """Declare or replace an endpoint from a JSON file (docs/bandit-router.md lists policies and params)."""
    try:
        body = json.loads(spec.read_text())
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read {spec}: {exc}[/red]")
        raise typer.Exit(2) from exc
    print_json(call("PUT", "bandit-router", f"/v1/endpoints/{endpoint}", body))
