"""``./scripts/bench drift``: how fast the drift service's core takes predictions with 20 numeric
features, and how quickly and how falsely each detector alerts, beside river's detectors run directly.

Throughput: ``DriftMonitor.on_prediction`` on predictions with 20 numeric features and a reference
loaded (every prediction updates the score detector and the data window; every 100th runs PSI and KS on
all 20 features plus the score). ``events_per_s_20_features`` keeps the monitor's state in a real
``redis-server`` the bench starts (two round trips per prediction, as the service does; Kafka excluded);
``events_per_s_20_features_in_memory`` keeps it in process (the computation alone).

Detection: per-example log loss of a model trained on river's Agrawal concept 0 and then frozen, on
streams whose concept changes to 4 at a known point (abrupt; gradual over 1,000 events with river's
ConceptDriftStream) and on a stationary stream. The service side runs the labels through
``DriftMonitor.on_label`` (detector, alert discipline, cooldown at 100 labels a second); river's side
updates the same detector class with the same parameters and counts every ``drift_detected``.
``delay_<d>`` is the mean number of events from the change to the first alert at or after it (misses
count as the rest of the stream and are reported; ``delay_gradual_<d>`` is timed from the start of the
transition, ``CHANGE - WIDTH / 2``), ``false_alarms_per_100k_<d>`` the alerts on the stationary stream
scaled to 100,000 events, ``alerts_per_shift_<d>`` the alerts at or after an abrupt change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from rich.console import Console
from river import drift as river_drift

from mlops.bench import drift_streams as ds
from mlops.bench.common import Result
from mlops.bench.drift_memory import MemoryStore, NullProducer
from mlops.v1 import events_pb2
from services.drift.core import DriftMonitor
from services.drift.detectors import AdwinConfig, DetectorConfig, KswinConfig, PageHinkleyConfig
from services.drift.references import ReferenceCache
from services.drift.settings import DriftSettings

DETECTORS: dict[str, DetectorConfig] = {
    "adwin": AdwinConfig(),
    "page_hinkley": PageHinkleyConfig(),
    "kswin": KswinConfig(),
}
CHANGE = 5000
WIDTH = 1000
LABELS_PER_S = 100.0
T0 = 1_700_000_000.0


# -- throughput ------------------------------------------------------------------------------------------
def _free_port(start: int = 26500) -> int:
    for port in range(start, 32000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for redis-server")


@contextlib.contextmanager
def _redis_server() -> Iterator[str | None]:
    """A private redis-server (no persistence), or None when the binary is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="mlops-bench-drift-") as tmp:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                 "no", "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 10
            while time.time() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


def _predictions(n: int, n_features: int = 20) -> list[events_pb2.Prediction]:
    rows = ds.feature_rows(n, n_features, change_at=n // 2, shifted=(0,), shift=0.5, seed=3)
    names = ds.feature_names(n_features)
    scores = 1 / (1 + np.exp(-rows[:, 1]))
    out = []
    for i, (row, s) in enumerate(zip(rows, scores, strict=True)):
        p = events_pb2.Prediction(prediction_id=f"p{i}", model="bench", version="1", outputs=[1 - s, s],
                                  features=dict(zip(names, map(float, row), strict=True)))
        p.time.FromNanoseconds(int((T0 + i / 1000) * 1e9))
        out.append(p)
    return out


def _reference(n_features: int = 20) -> bytes:
    train = ds.feature_rows(5000, n_features, seed=1)
    return json.dumps(ds.reference_for(train, 1 / (1 + np.exp(-train[:, 1])))).encode()


async def _throughput(preds: list[events_pb2.Prediction], redis_url: str | None) -> float:
    reference = _reference()

    async def fetch(model: str, version: str) -> bytes:
        return reference

    refs = ReferenceCache(fetch)
    settings = DriftSettings()
    if redis_url is None:
        store: Any = MemoryStore()
        client = None
    else:
        from redis.asyncio import Redis

        from services.drift.store import DriftStore

        client = Redis.from_url(redis_url)
        await client.flushdb()
        store = DriftStore(client, marker_ttl_s=3600, window=settings.rebuild_window, max_alerts=100,
                           rows_window=settings.data.window)
    monitor = DriftMonitor(store, NullProducer(), settings, refs, clock=lambda: T0)  # type: ignore[arg-type]
    warm = min(600, len(preds) // 5)
    for i, p in enumerate(preds[:warm]):
        await monitor.on_prediction(p, f"w{i}")
    start = time.perf_counter()
    for i, p in enumerate(preds[warm:]):
        await monitor.on_prediction(p, f"e{i}")
    rate = (len(preds) - warm) / (time.perf_counter() - start)
    if client is not None:
        await client.aclose()
    return rate


# -- detection -------------------------------------------------------------------------------------------
def _labels(losses: np.ndarray) -> list[events_pb2.Label]:
    """Label records whose per-example log loss is ``losses``: P(label 1) = exp(-loss)."""
    out = []
    for i, loss in enumerate(losses):
        q = math.exp(-float(loss))
        label = events_pb2.Label(prediction_id=f"l{i}", model="bench", version="1", outputs=[1 - q, q], label=1)
        label.time.FromNanoseconds(int((T0 + i / LABELS_PER_S) * 1e9))
        out.append(label)
    return out


async def _service_alerts(config: DetectorConfig, losses: np.ndarray) -> list[int]:
    producer = NullProducer()
    monitor = DriftMonitor(MemoryStore(), producer, DriftSettings(detector=config), clock=lambda: T0)  # type: ignore[arg-type]
    alerts = []
    for i, label in enumerate(_labels(losses)):
        before = producer.counts.get("drift.alerts", 0)
        await monitor.on_label(label, f"l{i}")
        if producer.counts.get("drift.alerts", 0) > before:
            alerts.append(i)
    return alerts


def _river_alerts(config: DetectorConfig, losses: np.ndarray) -> list[int]:
    params = config.model_dump(exclude={"type"})
    detector: Any = {"adwin": river_drift.ADWIN, "page_hinkley": river_drift.PageHinkley,
                     "kswin": river_drift.KSWIN}[config.type](**params)
    alerts = []
    for i, x in enumerate(losses):
        detector.update(float(x))
        if detector.drift_detected:
            alerts.append(i)
    return alerts


def _delay(alerts: list[int], change: int, n: int) -> tuple[float, bool]:
    after = [a for a in alerts if a >= change]
    return (float(after[0] - change), True) if after else (float(n - change), False)


def run(quick: bool, console: Console) -> Result:
    # Every alert the monitor raises is logged as a warning: thousands here, none of them news.
    logging.getLogger("services.drift").setLevel(logging.ERROR)
    result = Result("drift")
    n_preds = 3000 if quick else 12_000
    stationary_n = 20_000 if quick else 100_000
    seeds = [7] if quick else [7, 8, 9]
    result.notes.append(
        f"throughput: {n_preds} predictions, 20 numeric features, reference loaded, window 500 evaluated every 100; "
        "detection: Agrawal concept 0 -> 4 per-example log loss, change at 5000 (abrupt, and gradual over 1000), "
        f"{len(seeds)} seed(s); stationary stream of {stationary_n} scaled to 100k; the service's cooldown at "
        f"{LABELS_PER_S:g} labels/s; river runs the same detector class with the same parameters")

    preds = _predictions(n_preds)
    in_memory = asyncio.run(_throughput(preds, None))
    result.figure("events_per_s_20_features_in_memory", in_memory)
    with _redis_server() as url:
        if url is None:
            result.notes.append("redis-server missing: events_per_s_20_features is the in-memory figure")
            result.figure("events_per_s_20_features", in_memory)
        else:
            result.figure("events_per_s_20_features", asyncio.run(_throughput(preds, url)))
    console.print(f"throughput: {result.figures['events_per_s_20_features']:,.0f} events/s with Redis, "
                  f"{in_memory:,.0f} in memory")
    result.target("events_per_s_20_features", 1000.0)

    stationary = ds.loss_stream(stationary_n, None, seed=7)
    abrupt = {s: ds.loss_stream(12_000, CHANGE, seed=s) for s in seeds}
    gradual = {s: ds.loss_stream(12_000, CHANGE, width=WIDTH, seed=s + 10) for s in seeds}
    scale = 100_000 / stationary_n
    for name, config in DETECTORS.items():
        for side, alerts_of in (("", lambda c, x: asyncio.run(_service_alerts(c, x))), ("river_", _river_alerts)):
            t0 = time.perf_counter()
            delays, misses, extra = [], 0, 0
            for stream in abrupt.values():
                alerts = alerts_of(config, stream)
                d, hit = _delay(alerts, CHANGE, stream.size)
                delays.append(d)
                misses += not hit
                extra += max(0, len([a for a in alerts if a >= CHANGE]) - 1)
            # A gradual change is timed from the start of its transition (river's sigmoid at 12%).
            gradual_delays = [_delay(alerts_of(config, s), CHANGE - WIDTH // 2, s.size)[0] for s in gradual.values()]
            false_alarms = len(alerts_of(config, stationary)) * scale
            result.figure(f"{side}delay_{name}", float(np.mean(delays)))
            result.figure(f"{side}delay_gradual_{name}", float(np.mean(gradual_delays)))
            result.figure(f"{side}false_alarms_per_100k_{name}", false_alarms)
            result.figure(f"{side}alerts_per_shift_{name}", 1 + extra / len(abrupt))
            result.figure(f"{side}misses_{name}", misses)
            console.print(f"{side or 'service_'}{name}: delay {np.mean(delays):.0f} (gradual "
                          f"{np.mean(gradual_delays):.0f}), {false_alarms:.1f} false alarms / 100k, "
                          f"{1 + extra / len(abrupt):.1f} alerts per shift ({time.perf_counter() - t0:.1f} s)")
        result.target(f"false_alarms_per_100k_{name}", 1.0, higher_is_better=False)
        result.target(f"delay_{name}", 200.0, higher_is_better=False)
        result.target(f"alerts_per_shift_{name}", 1.0, higher_is_better=False)
    return result
