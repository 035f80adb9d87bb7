"""``./scripts/demo``: start the embedded stack, run the loan-approval scenario, print a summary,
write the report, stop the stack. Exit code 0 only when every step of the loop completed."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from datetime import datetime

from rich.console import Console
from rich.table import Table

from mlops.demo import report, scenario, timeline
from mlops.demo.client import Platform, PlatformError
from mlops.settings import PlatformSettings
from mlops.stack import procs
from mlops.stack.supervisor import StackError, Supervisor


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="demo", description=__doc__)
    p.add_argument("--train-events", type=int, default=3000, help="events streamed before training")
    p.add_argument("--drift-after", type=int, default=600, help="predictions served before the drift")
    p.add_argument("--max-predictions", type=int, default=12000, help="give up if the loop has not closed by then")
    p.add_argument("--after-promotion", type=int, default=300, help="predictions served after the promotion")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--keep-up", action="store_true", help="leave the stack running afterwards")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(sys.argv[1:] if argv is None else argv)
    console = Console()
    settings = PlatformSettings()
    sup = Supervisor(settings, report=lambda m: console.print(f"[dim]{m}[/dim]"))
    started_here = not any(procs.alive(p) for p in procs.load(settings.home).procs)
    t0 = time.time()
    outcome: dict | None = None
    error: str | None = None
    try:
        if started_here:
            console.rule("starting the embedded stack")
            sup.up()
        else:
            console.print("[dim]using the stack that is already running[/dim]")
        console.rule("the loop")
        platform = Platform(settings)
        try:
            outcome = scenario.run(
                scenario.Options(train_events=args.train_events, drift_after=args.drift_after,
                                 max_predictions=args.max_predictions, after_promotion=args.after_promotion,
                                 seed=args.seed),
                platform, console,
            )
        finally:
            if outcome is not None:
                # The stack's own addresses (the broker may not be where this process's settings say).
                stack_env = procs.load(settings.home).env
                stack_settings = settings.model_copy(update={
                    "kafka_bootstrap": stack_env.get("MLOPS_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)})
                outcome["timeline"] = _reconstruct(platform, stack_settings, outcome)
            platform.close()
    except (StackError, PlatformError, RuntimeError) as exc:
        error = str(exc)
        console.print(f"[red]the demo stopped: {exc}[/red]")
    except Exception:
        error = traceback.format_exc()
        console.print(f"[red]{error}[/red]")
    finally:
        if started_here and not args.keep_up:
            console.rule("stopping the stack")
            sup.down()

    ok = outcome is not None and error is None
    summary = _summary(outcome, ok, error, time.time() - t0)
    rec = outcome["record"] if outcome else scenario.Record()
    marks = _marks(rec, summary)
    out = report.write(settings.home / "reports", summary, rec.timeline, rec.accuracy, rec.traffic,
                       rec.drift_scores, marks)
    _print_summary(console, summary, out)
    return 0 if summary["loop_closed"] else 1


def _reconstruct(platform: Platform, settings: PlatformSettings, outcome: dict) -> dict:
    """When each step of the loop happened, from the platform's own record."""
    rec = outcome["record"]
    t0 = rec.drift_injected_at
    found: dict = {"drift_detected_at": None, "training_requested_at": None, "candidate_registered_at": None,
                   "promoted_at": None, "candidate": None}
    if t0 is None:
        return found
    after = [a for a in timeline.alerts(platform, scenario.MODEL) if (timeline.parse_time(a.get("time")) or t0) >= t0]
    times = sorted(t for a in after if (t := timeline.parse_time(a.get("time"))))
    found["drift_detected_at"] = times[0] if times else None
    requests = timeline.training_requests(settings, scenario.MODEL)
    reqs = sorted(r["time"] for r in requests if r["time"] and r["time"] >= t0)
    found["training_requested_at"] = reqs[0] if reqs else None
    for v in timeline.versions(platform, scenario.MODEL):
        created = timeline.parse_time(v.get("created_at"))
        if str(v.get("version")) == outcome["version"] or not created or created < t0:
            continue
        if found["candidate_registered_at"] is None or created < found["candidate_registered_at"]:
            found["candidate_registered_at"] = created
            found["candidate"] = str(v.get("version"))
        for tr in v.get("transitions", []) or []:
            if tr.get("to_stage") == "production":
                found["promoted_at"] = timeline.parse_time(tr.get("time"))
    return found


def _marks(rec: scenario.Record, summary: dict) -> dict[str, float]:
    """Seconds since the demo started of each step of the loop, for the charts."""
    marks = {}
    for label, key in (("drift injected", "drift_injected_at"), ("drift detected", "drift_detected_at"),
                       ("candidate registered", "candidate_registered_at"), ("promoted", "promoted_at")):
        if summary.get(key):
            marks[label] = datetime.fromisoformat(summary[key]).timestamp() - rec.started
    return marks


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _summary(outcome: dict | None, ok: bool, error: str | None, seconds: float) -> dict:
    versions: dict[str, dict] = {}
    found: dict = {}
    drift_at = None
    majority_at = None
    if outcome:
        rec = outcome["record"]
        drift_at = rec.drift_injected_at
        found = outcome.get("timeline") or {}
        majority_at = outcome["loop"]["majority_at"]
        shares = outcome["loop"]["shares_final"]
        for version in sorted(set(rec.correct) | set(rec.correct_after)):
            before, after = rec.correct.get(version, []), rec.correct_after.get(version, [])
            versions[version] = {
                "accuracy_before_drift": sum(before) / len(before) if before else None,
                "accuracy_after_drift": sum(after) / len(after) if after else None,
                "predictions": len(before) + len(after),
                "traffic_share_final": shares.get(version, 0.0),
            }
    promoted_at = found.get("promoted_at")
    closed = bool(ok and drift_at and found.get("drift_detected_at") and found.get("training_requested_at")
                  and found.get("candidate_registered_at") and promoted_at)
    return {
        "loop_closed": closed,
        "drift_injected_at": _iso(drift_at),
        "drift_detected_at": _iso(found.get("drift_detected_at")),
        "training_requested_at": _iso(found.get("training_requested_at")),
        "candidate_registered_at": _iso(found.get("candidate_registered_at")),
        "promoted_at": _iso(promoted_at),
        "promoted_version": found.get("candidate") if promoted_at else None,
        "seconds_drift_to_promotion": round((promoted_at - drift_at).total_seconds(), 1)
        if promoted_at and drift_at else None,
        "seconds_drift_to_majority_traffic": round((majority_at - drift_at).total_seconds(), 1)
        if majority_at and drift_at else None,
        "versions": versions,
        "seconds_total": round(seconds, 1),
        "error": error,
    }


def _print_summary(console: Console, summary: dict, out: object) -> None:
    console.rule("summary")
    steps = Table("step", "when")
    for key in ("drift_injected_at", "drift_detected_at", "training_requested_at", "candidate_registered_at",
                "promoted_at"):
        steps.add_row(key.removesuffix("_at").replace("_", " "), summary[key] or "[red]never[/red]")
    console.print(steps)
    table = Table("version", "accuracy before drift", "accuracy after drift", "traffic share (final)")
    for version, v in summary["versions"].items():
        def fmt(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}"
        table.add_row(f"v{version}", fmt(v["accuracy_before_drift"]), fmt(v["accuracy_after_drift"]),
                      f"{v['traffic_share_final']:.0%}")
    console.print(table)
    console.print(f"drift -> promotion: {summary['seconds_drift_to_promotion']} s; "
                  f"drift -> majority of traffic on the new version: {summary['seconds_drift_to_majority_traffic']} s")
    status = "[green]closed[/green]" if summary["loop_closed"] else "[red]did not close[/red]"
    console.print(f"the loop {status} in {summary['seconds_total']} s; report: {out}/report.html")


if __name__ == "__main__":
    sys.exit(main())
