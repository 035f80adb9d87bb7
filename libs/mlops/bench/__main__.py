"""``./scripts/bench NAME [--quick] [--json PATH]``: run a benchmark, print a table, write JSON."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mlops.bench import report
from mlops.bench.common import Result

NAMES = ("inference", "router", "pipeline", "drift", "bandit")


def _available(name: str) -> bool:
    return importlib.util.find_spec(f"mlops.bench.{name}") is not None


def _run_one(name: str, quick: bool, console: Console) -> Result:
    module = importlib.import_module(f"mlops.bench.{name}")
    console.rule(f"bench {name}{' (quick)' if quick else ''}")
    return module.run(quick=quick, console=console)


def _table(result: Result) -> Table:
    table = Table("figure", "value", "target", "met", title=f"bench {result.bench}")
    for key, value in result.figures.items():
        t = result.targets.get(key)
        table.add_row(key, f"{value:,.4g}", f"{t['direction']} {t['target']:g}" if t else "",
                      ("[green]yes[/green]" if t["met"] else "[red]no[/red]") if t else "")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("name", choices=[*NAMES, "all"])
    parser.add_argument("--quick", action="store_true", help="a shorter run (fewer requests, fewer levels)")
    parser.add_argument("--json", type=Path, help="where to write the JSON result")
    args = parser.parse_args(argv)
    console = Console()
    names = [n for n in NAMES if _available(n)] if args.name == "all" else [args.name]
    if args.name != "all" and not _available(args.name):
        console.print(f"[red]the {args.name} benchmark is not built yet; built: "
                      f"{', '.join(n for n in NAMES if _available(n)) or 'none'}[/red]")
        return 2
    results = []
    for name in names:
        result = _run_one(name, args.quick, console)
        console.print(_table(result))
        results.append(result.to_json())
    payload = results[0] if len(results) == 1 else {"bench": "all", "results": results}
    if args.name == "all":
        command = "./scripts/bench all" + (" --quick" if args.quick else "")
        console.print(f"wrote {report.write(results, command)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
