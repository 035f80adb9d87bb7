"""The loan-approval scenario: Agrawal events through ingest, a model trained and registered, served
behind the router, feedback from the generator's true labels back to the router and the drift service.

Every step goes through the platform's public REST APIs, as a product team would use them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from river.datasets import synth

from mlops.demo import live
from mlops.demo.client import Platform

STREAM = "loans"
MODEL = "loan-approval"
ENDPOINT = "loans"
FEATURES = ["salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan"]
LABEL = "approved"
SCHEMA = {
    "fields": [
        {"name": "salary", "type": "float", "min": 0},
        {"name": "commission", "type": "float", "min": 0},
        {"name": "age", "type": "int", "min": 18, "max": 100},
        {"name": "elevel", "type": "int", "min": 0, "max": 4},
        {"name": "car", "type": "int", "min": 1, "max": 20},
        {"name": "zipcode", "type": "int", "min": 0, "max": 8},
        {"name": "hvalue", "type": "float", "min": 0},
        {"name": "hyears", "type": "int", "min": 0, "max": 30},
        {"name": "loan", "type": "float", "min": 0},
        {"name": LABEL, "type": "int", "min": 0, "max": 1},
    ]
}


@dataclass
class Options:
    train_events: int = 3000
    drift_after: int = 600            # predictions served before the world changes
    max_predictions: int = 12000      # give up when the loop has not closed by then
    after_promotion: int = 300        # predictions served after the promotion, to show the new traffic
    drift_function: int = 5           # the Agrawal classification function after the drift
    drift_feature: str = "car"        # the feature whose distribution shifts with the drift
    seed: int = 42
    batch: int = 250
    promote_threshold: float = 0.95
    min_samples: int = 100


@dataclass
class Record:
    """What the demo saw, for the summary and the report."""

    started: float = field(default_factory=time.time)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    accuracy: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    traffic: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    correct: dict[str, list[int]] = field(default_factory=dict)
    correct_after: dict[str, list[int]] = field(default_factory=dict)
    drift_injected_at: datetime | None = None
    drift_scores: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def mark(self, event: str, console: Console, at: datetime | None = None) -> str:
        at = (at or datetime.now(UTC)).isoformat()
        self.timeline.append({"at": at, "t": round(time.time() - self.started, 2), "event": event})
        console.print(f"[bold green]✓[/bold green] {event}")
        return at


def _event(i: int, x: dict[str, Any], y: int) -> dict[str, Any]:
    return {"event_id": f"loan-{i}", "entity_id": f"applicant-{i}", **{k: x[k] for k in FEATURES}, LABEL: int(y)}


def run(opts: Options, platform: Platform, console: Console) -> dict[str, Any]:
    rec = Record()
    gen = iter(synth.Agrawal(classification_function=0, seed=opts.seed))

    platform.put_schema(STREAM, SCHEMA)
    rec.mark(f"stream {STREAM!r} declared with {len(SCHEMA['fields'])} typed fields", console)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("streaming loan applications into ingest", total=opts.train_events)
        sent = 0
        while sent < opts.train_events:
            n = min(opts.batch, opts.train_events - sent)
            events = [_event(sent + j, *next(gen)) for j in range(n)]
            result = platform.send_events(STREAM, events)
            if result["rejected"]:
                raise RuntimeError(f"ingest rejected demo events: {result['rejected'][:3]}")
            sent += n
            progress.update(task, completed=sent)
    rec.mark(f"{opts.train_events} events accepted by ingest", console)

    def offline_ready() -> bool:
        card = platform.call("POST", "feature", "/v1/datasets",
                             {"stream": STREAM, "features": FEATURES, "label": LABEL}, ok=(201, 400, 404))
        return card.get("rows") == opts.train_events

    platform.wait("the offline store to hold every event", offline_ready, timeout_s=120)
    rec.mark("features computed: online store (Redis) and offline store (Parquet) up to date", console)

    # The trainer registers at candidate with its own (least-role) token; putting the first version in
    # production is an admin's act, done below with the demo's admin token and audited as such.
    job = platform.train({"model": MODEL, "stream": STREAM, "features": FEATURES, "label": LABEL,
                          "stage": "candidate", "seed": opts.seed})
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"training {MODEL} (job {job['id']})", total=1.0)
        while job["state"] not in ("succeeded", "failed"):
            time.sleep(0.5)
            job = platform.job(job["id"])
            progress.update(task, completed=float(job.get("progress") or 0.0))
    if job["state"] != "succeeded":
        raise RuntimeError(f"training failed: {job.get('error')}")
    version = str(job["version"])
    platform.call("POST", "registry", f"/v1/models/{MODEL}/versions/{version}/stage",
                  {"stage": "production", "reason": "demo: the first model serves"})
    rec.mark(f"trained and registered {MODEL} v{version} (holdout accuracy "
             f"{job.get('metrics', {}).get('accuracy', float('nan')):.3f}), stage production", console)

    platform.wait(f"inference to load {MODEL} v{version}", lambda: platform.model_ready(MODEL, version), 120)
    rec.mark(f"inference loaded v{version} (checksum verified, warmed up)", console)

    policy = {"type": "thompson", "params": {"auto_candidates": True, "promote_threshold": opts.promote_threshold,
                                              "min_samples": opts.min_samples}}
    platform.put_endpoint(ENDPOINT, {"variants": [{"name": f"v{version}", "model": MODEL, "version": version,
                                                   "weight": 1.0}], "policy": policy})
    rec.mark(f"router endpoint {ENDPOINT!r}: Thompson sampling; new candidates join as arms by themselves", console)

    loop = live.serve(opts, platform, console, rec, gen, version)
    accuracy = {v: sum(c) / len(c) for v, c in rec.correct.items() if c}
    return {"record": rec, "version": version, "accuracy": accuracy, "loop": loop, "job": job}
