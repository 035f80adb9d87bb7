"""``mlops datasets ...``: versioned, point-in-time-correct training sets from the command line."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from mlops.cli.common import call, console, print_json

datasets_app = typer.Typer(help="Versioned training sets.", no_args_is_help=True)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Label rows from a file: CSV (header row), JSON (an array), NDJSON, or Parquet."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        return [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in r.items()} for r in rows]
    text = path.read_text()
    if suffix == ".csv":
        out = []
        for row in csv.DictReader(io.StringIO(text)):
            out.append({k: _number(v) if k not in ("entity_id", "event_time") else v for k, v in row.items()})
        return out
    stripped = text.lstrip()
    if stripped.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _number(text: str | None) -> Any:
    if text is None or text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@datasets_app.command("build")
def datasets_build(
    stream: Annotated[str, typer.Argument(help="Stream whose events are the label rows.")] = "",
    features: Annotated[str, typer.Option(help="Comma-separated feature names.")] = "",
    label: Annotated[str, typer.Option(help="Label field.")] = "",
    start: Annotated[str | None, typer.Option(help="Only label rows at or after this time (ISO-8601).")] = None,
    end: Annotated[str | None, typer.Option(help="Only label rows before this time (ISO-8601).")] = None,
    last_n: Annotated[int, typer.Option(help="Keep only the most recent N rows by event time (0: all).")] = 0,
    rows_file: Annotated[Path | None, typer.Option(
        help="Label rows from a file (CSV, JSON, NDJSON or Parquet) with entity_id, event_time and the label.")] = None,
) -> None:
    """Build a point-in-time-correct training set; prints its card (the id is a hash of its content)."""
    if not features or not label:
        console.print("[red]--features and --label are required[/red]")
        raise typer.Exit(2)
    if not stream and rows_file is None:
        console.print("[red]give a STREAM or --rows-file[/red]")
        raise typer.Exit(2)
    body: dict[str, Any] = {"stream": stream, "features": features.split(","), "label": label, "last_n": last_n,
                            "start": start, "end": end}
    if rows_file is not None:
        body["rows"] = read_rows(rows_file)
    print_json(call("POST", "feature", "/v1/datasets", body))


@datasets_app.command("show")
def datasets_show(dataset_id: str) -> None:
    """A dataset version's card: schema, rows, time range, per-column statistics, sources."""
    print_json(call("GET", "feature", f"/v1/datasets/{dataset_id}"))


@datasets_app.command("list")
def datasets_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every dataset version, newest first."""
    datasets = call("GET", "feature", "/v1/datasets")["datasets"]
    if as_json:
        print_json(datasets)
        return
    from rich.table import Table

    table = Table("id", "stream", "rows", "features", "label", "event time range", "created")
    for d in datasets:
        table.add_row(d["id"], d["stream"], str(d["rows"]), ",".join(d["features"]), d["label"],
                      f"{d['event_time_min']} .. {d['event_time_max']}", d["created_at"])
    console.print(table)
