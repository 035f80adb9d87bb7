"""``./scripts/bench drift``, detection: how soon and how falsely the drift service *alerts* (after its
alerting rules: the effect test, the post-firing window, hysteresis, the cooldown), beside river's
detector firing in process on the identical stream with the identical parameters.

Streams (``drift_streams``), per seed, the change at ``change``:

- ``abrupt``: per-example loss of a frozen model on river's Agrawal stream, concept 0 -> 4;
- ``gradual``: the same over river's ConceptDriftStream 1,000 wide, timed from ``change - 1,000`` (where
  the new concept is 2% of the examples; detectors fire from there on);
- ``shift``: positive-class scores whose mean moves from 0.30 to 0.45 (sd 0.12), through the prediction path;
- ``step``: the issue's stream, the error rate going from 0.10 to 0.25 (P(label) 0.8 right, 0.2 wrong);
- the loss streams again as a 0/1 error (``<stream>_zero_one``) for the detectors offered for it;
- stationary streams of each signal for the false alarms.

A delay is events from the change (or the transition's start) to the first alert at or after it; a miss
counts as the rest of the stream and is counted. Medians over the seeds.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError
from rich.console import Console
from river import drift as river_drift

from mlops.bench import drift_streams as ds
from mlops.bench.common import Result
from mlops.bench.drift_memory import MemoryStore, NullProducer
from mlops.v1 import events_pb2
from services.drift.core import DriftMonitor
from services.drift.detectors import DetectorConfig, Signal
from services.drift.settings import DriftSettings

DETECTORS = ("adwin", "page_hinkley", "kswin")
RATE_PER_S = 100.0  # record times: the cooldown (60 s) sees 100 labels or predictions a second
T0 = 1_700_000_000.0
RATIO_TARGET = 1.2
WIDTH = 1000


@dataclass(frozen=True)
class Case:
    """One kind of stream: its signal, how to make it for a seed, and where its delay is timed from."""

    name: str
    signal: Signal
    make: Callable[[int], np.ndarray]
    start: int


@dataclass(frozen=True)
class Sizes:
    seeds: tuple[int, ...]
    change: int
    length: int
    flat: int


def sizes(quick: bool) -> Sizes:
    if quick:
        return Sizes(seeds=(7, 8, 9, 10, 11), change=2000, length=4000, flat=20_000)
    return Sizes(seeds=(7, 8, 9, 10, 11), change=5000, length=10_000, flat=100_000)


def step_stream(n: int, change: int, seed: int, loss: str = "log_loss") -> np.ndarray:
    """The error rate going from 0.10 to 0.25 at ``change``: log loss of P(label) 0.8 / 0.2, or 0/1."""
    rng = np.random.default_rng(seed)
    wrong = np.concatenate([rng.random(change) < 0.10, rng.random(n - change) < 0.25])
    if loss == "zero_one":
        return wrong.astype(np.float64)
    return np.where(wrong, -math.log(0.2), -math.log(0.8))


def cases(s: Sizes) -> list[Case]:
    c, n = s.change, s.length
    out = [Case("shift", "score", lambda seed: ds.score_stream(n, c, seed=seed), c)]
    for loss, suffix in (("log_loss", ""), ("zero_one", "_zero_one")):
        out += [
            Case(f"abrupt{suffix}", loss, lambda seed, lo=loss: ds.loss_stream(n, c, seed=seed, loss=lo), c),
            Case(f"gradual{suffix}", loss,
                 lambda seed, lo=loss: ds.loss_stream(n + WIDTH, c + WIDTH, width=WIDTH, seed=seed + 10, loss=lo),
                 c),
            Case(f"step{suffix}", loss, lambda seed, lo=loss: step_stream(n, c, seed, lo), c),
        ]
    return out


def flat_stream(signal: Signal, n: int) -> np.ndarray:
    if signal == "score":
        return ds.score_stream(n, None, seed=7)
    return ds.loss_stream(n, None, seed=7, loss=signal)


# -- the service's side: records through DriftMonitor ------------------------------------------------------
def _settings(detector: str, signal: Signal) -> DriftSettings:
    if signal == "score":
        return DriftSettings(detector={"type": detector}, concept_detection=False)
    return DriftSettings(detector={"type": detector}, concept_loss="zero_one" if signal == "zero_one" else "log_loss")


def _timestamp(msg: Any, i: int) -> None:
    msg.time.FromNanoseconds(int((T0 + i / RATE_PER_S) * 1e9))


async def service_alerts(settings: DriftSettings, signal: Signal, values: np.ndarray) -> list[int]:
    """Indexes of the values at which the monitor produced an alert of the streaming detector's kind."""
    producer = NullProducer()
    monitor = DriftMonitor(MemoryStore(), producer, settings, clock=lambda: T0)  # type: ignore[arg-type]
    alerts = []
    for i, x in enumerate(values):
        before = producer.counts.get("drift.alerts", 0)
        if signal == "score":
            p = events_pb2.Prediction(prediction_id=f"p{i}", model="bench", version="1", outputs=[1 - x, x])
            _timestamp(p, i)
            await monitor.on_prediction(p, f"p{i}")
        else:
            # log loss: P(label 1) = exp(-loss); 0/1: a confident right or wrong answer
            q = math.exp(-float(x)) if signal == "log_loss" else (0.1 if x else 0.9)
            label = events_pb2.Label(prediction_id=f"l{i}", model="bench", version="1", outputs=[1 - q, q], label=1)
            _timestamp(label, i)
            await monitor.on_label(label, f"l{i}")
        if producer.counts.get("drift.alerts", 0) > before:
            alerts.append(i)
    return alerts


def river_firings(config: DetectorConfig, values: np.ndarray) -> list[int]:
    detector: Any = {"adwin": river_drift.ADWIN, "page_hinkley": river_drift.PageHinkley,
                     "kswin": river_drift.KSWIN}[config.type](**config.model_dump(exclude={"type"}))
    out = []
    for i, x in enumerate(values):
        detector.update(float(x))
        if detector.drift_detected:
            out.append(i)
    return out


def delay(events: list[int], start: int, n: int) -> tuple[int, bool]:
    after = [e for e in events if e >= start]
    return (after[0] - start, True) if after else (n - start, False)


def measure(result: Result, quick: bool, console: Console) -> None:
    s = sizes(quick)
    result.notes.append(
        f"detection: {len(s.seeds)} seeds (medians), change at {s.change} of {s.length} (gradual: {WIDTH} wide, "
        f"timed from its start, change - {WIDTH}); stationary streams of {s.flat} scaled to 100k; records "
        f"{RATE_PER_S:g} a second (the cooldown); river runs the same detector class with the same parameters")
    t = time.perf_counter()
    streams = {case.name: {seed: case.make(seed) for seed in s.seeds} for case in cases(s)}
    flats = {signal: flat_stream(signal, s.flat) for signal in ("score", "log_loss", "zero_one")}
    console.print(f"streams made ({time.perf_counter() - t:.1f} s)")
    scale = 100_000 / s.flat
    for name in DETECTORS:
        t = time.perf_counter()
        misses = river_misses = 0
        false_alarms: dict[str, float] = {}
        river_false: dict[str, float] = {}
        for case in cases(s):
            try:
                settings = _settings(name, case.signal)
            except ValidationError as refused:
                result.notes.append(f"{name} on {case.signal}: refused ({refused.errors()[0]['msg']})")
                continue
            config = settings.detector_for(case.signal)
            alert_delays, river_delays = [], []
            for values in streams[case.name].values():
                d, hit = delay(asyncio.run(service_alerts(settings, case.signal, values)), case.start, values.size)
                r, river_hit = delay(river_firings(config, values), case.start, values.size)
                alert_delays.append(d)
                river_delays.append(r)
                misses += not hit
                river_misses += not river_hit
            alert, river = float(np.median(alert_delays)), float(np.median(river_delays))
            result.figure(f"alert_delay_{name}_{case.name}", alert)
            result.figure(f"river_delay_{name}_{case.name}", river)
            result.figure(f"alert_delay_ratio_{name}_{case.name}", alert / max(river, 1.0))
            result.target(f"alert_delay_ratio_{name}_{case.name}", RATIO_TARGET, higher_is_better=False)
            if case.signal not in false_alarms:
                flat = flats[case.signal]
                false_alarms[case.signal] = len(asyncio.run(service_alerts(settings, case.signal, flat))) * scale
                river_false[case.signal] = len(river_firings(config, flat)) * scale
                result.figure(f"false_alarms_per_100k_{name}_{case.signal}", false_alarms[case.signal])
                result.figure(f"river_false_alarms_per_100k_{name}_{case.signal}", river_false[case.signal])
        result.figure(f"alert_misses_{name}", misses)
        result.figure(f"river_misses_{name}", river_misses)
        result.target(f"alert_misses_{name}", 0, higher_is_better=False)
        # the headline delay: the abrupt change, or the score's shift for a detector refused for a loss
        headline = "abrupt" if f"alert_delay_{name}_abrupt" in result.figures else "shift"
        result.figure(f"delay_{name}", result.figures[f"alert_delay_{name}_{headline}"])
        result.figure(f"river_delay_{name}", result.figures[f"river_delay_{name}_{headline}"])
        result.figure(f"false_alarms_per_100k_{name}", max(false_alarms.values()))
        result.figure(f"river_false_alarms_per_100k_{name}", max(river_false.values()))
        result.target(f"false_alarms_per_100k_{name}", 1.0, higher_is_better=False)
        row = ", ".join(f"{c.name} {result.figures[f'alert_delay_{name}_{c.name}']:.0f}/"
                        f"{result.figures[f'river_delay_{name}_{c.name}']:.0f}"
                        for c in cases(s) if f"alert_delay_{name}_{c.name}" in result.figures)
        console.print(f"{name}: alert/river delay {row}; misses {misses} (river {river_misses}); false alarms "
                      f"per 100k {false_alarms} (river {river_false}) ({time.perf_counter() - t:.1f} s)")
