"""``./scripts/bench drift``: how fast the drift service's core takes predictions with 20 numeric
features, and how quickly and how falsely each detector alerts, beside river's detectors run directly.

Throughput: ``DriftMonitor.on_prediction`` on predictions with 20 numeric features and a reference
loaded (every prediction updates the score detector and the data window; every 100th runs PSI and KS on
all 20 features plus the score). ``events_per_s_20_features`` keeps the monitor's state in a real
``redis-server`` the bench starts (two round trips per prediction, as the service does; Kafka excluded);
``events_per_s_20_features_in_memory`` keeps it in process (the computation alone).

Detection (:mod:`mlops.bench.drift_alerts`): the delays *after the service's alerting rules* on abrupt,
gradual, mean-shift and error-rate-step streams over five seeds (median), misses counted, beside river's
firing of the same detector on the identical stream, and false alarms per 100k on stationary streams of
each signal (score, log loss, 0/1 loss); targets: each ``alert_delay`` within 1.2x of ``river_delay``,
``alert_misses`` 0, ``false_alarms_per_100k`` <= 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from rich.console import Console

from mlops.bench import drift_alerts
from mlops.bench import drift_streams as ds
from mlops.bench.common import Result
from mlops.bench.drift_memory import MemoryStore, NullProducer
from mlops.v1 import events_pb2
from services.drift.core import DriftMonitor
from services.drift.references import ReferenceCache
from services.drift.settings import DriftSettings

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


def run(quick: bool, console: Console) -> Result:
    # Every alert the monitor raises is logged as a warning: thousands here, none of them news.
    logging.getLogger("services.drift").setLevel(logging.ERROR)
    result = Result("drift")
    n_preds = 3000 if quick else 12_000
    result.notes.append(
        f"throughput: {n_preds} predictions, 20 numeric features, reference loaded, window 500 evaluated every 100")

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

    drift_alerts.measure(result, quick, console)
    return result
