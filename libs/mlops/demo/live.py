"""The live part of the demo: traffic through the router with outcomes fed back, the world changing
mid-run (concept drift plus a shift in one feature), and the platform left alone to notice, retrain, test
the new model on live traffic and promote it. The demo only watches."""

from __future__ import annotations

import time
from collections import Counter, deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from river.datasets import synth

from mlops.demo.client import Platform, PlatformError

if TYPE_CHECKING:
    from mlops.demo.scenario import Options, Record

WINDOW = 200  # predictions in the rolling windows (traffic share, accuracy)


def _predicted(outputs: list[float]) -> int:
    if len(outputs) > 1:
        return max(range(len(outputs)), key=lambda k: outputs[k])
    return int(outputs[0] > 0.5)


class _Board:
    """The live table: per version, traffic share and rolling accuracy; and the phase of the loop."""

    def __init__(self) -> None:
        self.recent: deque[tuple[str, int]] = deque(maxlen=WINDOW)
        self.phase = "serving v1"

    def add(self, version: str, hit: int) -> None:
        self.recent.append((version, hit))

    def shares(self) -> dict[str, float]:
        counts = Counter(v for v, _ in self.recent)
        total = sum(counts.values()) or 1
        return {v: n / total for v, n in counts.items()}

    def table(self, served: int) -> Table:
        t = Table(title=f"live traffic · {served} predictions · {self.phase}")
        for col in ("version", f"share (last {WINDOW})", "rolling accuracy"):
            t.add_column(col)
        by_version: dict[str, list[int]] = {}
        for v, hit in self.recent:
            by_version.setdefault(v, []).append(hit)
        for v, share in sorted(self.shares().items()):
            hits = by_version[v]
            t.add_row(f"v{v}", f"{share:.0%}", f"{sum(hits) / len(hits):.3f}")
        return t


def serve(opts: Options, platform: Platform, console: Console, rec: Record, gen: Any, v1: str) -> dict[str, Any]:
    from mlops.demo.scenario import ENDPOINT, FEATURES, LABEL, MODEL, STREAM

    board = _Board()
    pending_feedback: list[dict[str, Any]] = []
    pending_events: list[dict[str, Any]] = []
    promoted: str | None = None
    promoted_seen_at: int | None = None
    majority_at: datetime | None = None
    served = 0
    with Live(board.table(0), console=console, refresh_per_second=4) as screen:
        for i in range(opts.max_predictions):
            if i == opts.drift_after:
                gen = iter(synth.Agrawal(classification_function=opts.drift_function, seed=opts.seed + 1))
                rec.drift_injected_at = datetime.now(UTC)
                board.phase = "drift injected: waiting for the platform"
                rec.mark(f"drift injected: labels now follow Agrawal function {opts.drift_function}, "
                         f"and {opts.drift_feature!r} shifted upwards", console, rec.drift_injected_at)
            x, y = next(gen)
            if rec.drift_injected_at is not None:
                x = dict(x)
                x[opts.drift_feature] = min(20, int(x[opts.drift_feature]) + 8)
            features = {k: x[k] for k in FEATURES}
            try:
                resp = platform.predict(ENDPOINT, {"unit_id": f"applicant-live-{i}", "features": features})
            except PlatformError as exc:
                console.print(f"[yellow]predict failed, retrying: {exc}[/yellow]")
                time.sleep(0.5)
                continue
            version = str(resp["version"])
            hit = int(_predicted(resp["outputs"]) == int(y))
            book = rec.correct_after if rec.drift_injected_at else rec.correct
            book.setdefault(version, []).append(hit)
            board.add(version, hit)
            served += 1
            pending_feedback.append({"prediction_id": resp["prediction_id"], "label": int(y)})
            pending_events.append({"event_id": f"loan-live-{i}", "entity_id": f"applicant-live-{i}", **features,
                                   LABEL: int(y)})
            if len(pending_feedback) >= 20:
                platform.feedback(pending_feedback)
                platform.send_events(STREAM, pending_events)
                pending_feedback, pending_events = [], []
            t = round(time.time() - rec.started, 2)
            shares = board.shares()
            for v, share in shares.items():
                rec.traffic.setdefault(v, []).append((t, share))
            window = [h for vv, h in board.recent if vv == version]
            rec.accuracy.setdefault(version, []).append((t, sum(window) / len(window)))
            if (rec.drift_injected_at and majority_at is None and len(board.recent) >= WINDOW // 2
                    and any(v != v1 and s > 0.5 for v, s in shares.items())):
                majority_at = datetime.now(UTC)
            if i % 50 == 0:
                _record_drift(platform, rec, MODEL, v1)
            if i % 25 == 0:
                screen.update(board.table(served))
                if promoted is None and rec.drift_injected_at is not None:
                    promoted = _production_version(platform, MODEL, v1)
                    if promoted is not None:
                        promoted_seen_at = i
                        board.phase = f"v{promoted} promoted to production"
                        rec.mark(f"the platform promoted v{promoted} to production", console)
            if promoted_seen_at is not None and i - promoted_seen_at >= opts.after_promotion:
                break
        if pending_feedback:
            platform.feedback(pending_feedback)
            platform.send_events(STREAM, pending_events)
        screen.update(board.table(served))
    return {"served": served, "promoted": promoted, "majority_at": majority_at, "shares_final": board.shares()}


_SCORE_WORDS = ("psi", "score", "error", "statistic", "estimate", "p_value")


def _numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a drift report whose names say they are scores."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(_numbers(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(data, int | float) and not isinstance(data, bool):
        if any(w in prefix.lower() for w in _SCORE_WORDS):
            out[prefix] = float(data)
    return out


def _record_drift(platform: Platform, rec: Record, model: str, version: str) -> None:
    try:
        report = platform.drift(model, version)
    except PlatformError:
        return
    t = round(time.time() - rec.started, 2)
    for name, value in list(_numbers(report).items())[:8]:
        rec.drift_scores.setdefault(name, []).append((t, value))


def _production_version(platform: Platform, model: str, v1: str) -> str | None:
    try:
        data = platform.call("GET", "registry", f"/v1/models/{model}/aliases/production")
    except PlatformError:
        return None
    version = str(data.get("version", ""))
    return version if version and version != v1 else None
