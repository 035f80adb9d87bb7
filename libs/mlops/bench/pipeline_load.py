"""Load and probes for ``bench pipeline``: the events, the preload of ``events.raw``, the raw aiokafka
relay (the baseline), progress read from the services' Prometheus counters, and online-read latency."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from mlops.bench.common import percentile
from mlops.bench.cpu import process_cpu_s
from mlops.grpc_util import channel
from mlops.settings import PlatformSettings
from mlops.v1 import feature_pb2, feature_pb2_grpc

#: the stream names the bench uses: one only the shipped `default` view applies to (every field passed
#: through, an event count: what every stream gets), one the `payments` view applies to as well
#: (11 more aggregations, 7 of them over tumbling or sliding windows)
DEFAULT_STREAM = "bench-events"
WINDOWED_STREAM = "payments-bench"
SCHEMA = {"fields": [
    {"name": "amount", "type": "float", "min": 0},
    {"name": "merchant", "type": "string"},
    {"name": "country", "type": "string", "enum": ["DE", "FR", "NL", "ES", "IT"]},
    {"name": "card_present", "type": "bool"},
]}


def events(stream: str, n: int, entities: int, seed: int = 1, prefix: str = "c"
           ) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """``n`` JSON records of ``stream`` for ``events.raw`` (key, value, headers), event times over the last
    hour in order, entities ``<prefix><k>`` drawn uniformly: what a payments producer would send."""
    rng = random.Random(seed)
    now = time.time()
    out = []
    for i in range(n):
        entity = f"{prefix}{rng.randrange(entities)}"
        body = {"stream": stream, "entity_id": entity,
                "event_time": datetime.fromtimestamp(now - 3600 + 3600 * i / n, UTC).isoformat(),
                "amount": round(rng.expovariate(1 / 40), 2), "merchant": f"m{rng.randrange(200)}",
                "country": rng.choice(("DE", "FR", "NL", "ES", "IT")), "card_present": rng.random() < 0.6}
        out.append((entity.encode(), json.dumps(body).encode(),
                    [("event_id", f"{stream}-{seed}-{i}".encode()), ("content-type", b"application/json")]))
    return out


def _producer(settings: PlatformSettings) -> AIOKafkaProducer:
    """Produced the way the platform's own producer is configured (acks, linger, idempotence)."""
    return AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                            acks="all" if settings.kafka_acks == "all" else int(settings.kafka_acks),
                            linger_ms=settings.kafka_linger_ms, enable_idempotence=settings.kafka_idempotence,
                            max_request_size=16 * 1024 * 1024)


async def preload(settings: PlatformSettings, topic: str,
                  records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> float:
    """Produce every record and wait for the acks; returns records/s."""
    producer = _producer(settings)
    await producer.start()
    try:
        start = time.perf_counter()
        for i in range(0, len(records), 5000):
            futures = [await producer.send(topic, value=v, key=k, headers=h) for k, v, h in records[i : i + 5000]]
            await asyncio.gather(*futures)
        return len(records) / (time.perf_counter() - start)
    finally:
        await producer.stop()


@dataclass
class Progress:
    """When a count crossed 10% and 90% of the total: the steady rate between them, start-up excluded.

    A count read by polling is seen late by up to one poll interval; each crossing time is interpolated
    between the two readings around it, so a coarser poll (less CPU taken from what is measured) keeps
    its precision."""

    total: int
    t10: float | None = None
    t90: float | None = None
    t_first: float | None = None
    t_done: float | None = None
    _last: tuple[int, float] | None = None

    def _crossed(self, target: float, count: int, now: float) -> float:
        if self._last is None or count <= self._last[0]:
            return now
        c0, t0 = self._last
        return t0 + (now - t0) * max(0.0, target - c0) / (count - c0)

    def see(self, count: int, now: float) -> None:
        if count > 0 and self.t_first is None:
            self.t_first = now
        if count >= 0.1 * self.total and self.t10 is None:
            self.t10 = self._crossed(0.1 * self.total, count, now)
        if count >= 0.9 * self.total and self.t90 is None:
            self.t90 = self._crossed(0.9 * self.total, count, now)
        if count >= self.total and self.t_done is None:
            self.t_done = now
        self._last = (count, now)

    @property
    def rate(self) -> float:
        if self.t10 is None or self.t90 is None or self.t90 <= self.t10:
            return float("nan")
        return 0.8 * self.total / (self.t90 - self.t10)


def through_rate(entered: Progress, left: Progress) -> float:
    """Events per second through a pipeline of stages: the middle 80% of the events, from the first stage
    counting its 10% (``entered``) to the last stage counting its 90% (``left``). Each stage's own 10-90%
    rate would flatter a later stage: it finishes the backlog after the earlier stages have stopped and
    left it the machine."""
    if entered.t10 is None or left.t90 is None or left.t90 <= entered.t10:
        return float("nan")
    return 0.8 * left.total / (left.t90 - entered.t10)


async def relay(settings: PlatformSettings, source: str, target: str, total: int, batch: int, group: str
                ) -> Progress:
    """The baseline: consume ``source`` as consumer group ``group`` (from its committed offsets, or from the
    start) and produce every record unchanged to ``target``, committing after each batch's acks, like the
    pipeline's consumers (and with their fetch and producer settings); nothing else. Stops after ``total``
    records: a bench round reuses the group, so each round relays the records preloaded for it, as the
    pipeline's groups do."""
    consumer = AIOKafkaConsumer(source, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=4 * 1024 * 1024,
                                fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    producer = _producer(settings)
    await consumer.start()
    await producer.start()
    progress = Progress(total)
    done = 0
    try:
        while done < total:
            batches = await consumer.getmany(timeout_ms=200, max_records=batch)
            futures = []
            for records in batches.values():
                for r in records:
                    futures.append(await producer.send(target, value=r.value, key=r.key, headers=list(r.headers)))
            await asyncio.gather(*futures)
            if futures:
                await consumer.commit()
            done += len(futures)
            progress.see(done, time.perf_counter())
    finally:
        await consumer.stop()
        await producer.stop()
    return progress


class CpuMeter:
    """CPU time used by some processes between two readings: a cost per event that other users of a
    shared machine do not move the way they move rates."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: (process_cpu_s(pid) or 0.0) for name, pid in pids.items()}

    def used(self) -> dict[str, float]:
        return {name: (process_cpu_s(pid) or 0.0) - self.start[name] for name, pid in self.pids.items()}


def counter(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus counter's samples whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _counter_lines(metrics_text: str, name: str, **labels: str) -> float:
    """:func:`counter` for the bench's polling: only the lines of ``name`` are parsed (the whole text, parsed
    many times a second, took CPU from the services being measured on a two-core machine)."""
    lines = "\n".join(line for line in metrics_text.splitlines() if line.startswith(name + "{"))
    return counter(lines, name, **labels) if lines else 0.0


async def _poll(url: str, name: str, labels: dict[str, str], headers: dict[str, str], timeout_s: float,
                interval_s: float, done: Callable[[float, float], bool]) -> bool:
    """Poll a service's /metrics until ``done(value of name{labels}, time read)``; False at the timeout."""
    deadline = time.perf_counter() + timeout_s
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        while time.perf_counter() < deadline:
            try:
                text = (await http.get(url)).text
                if done(_counter_lines(text, name, **labels), time.perf_counter()):
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(interval_s)
    return False


async def follow(url: str, name: str, labels: dict[str, str], progress: Progress, timeout_s: float,
                 headers: dict[str, str], interval_s: float = 0.1) -> None:
    """Poll a service's /metrics until ``name{labels}`` reaches the total."""
    def seen(value: float, now: float) -> bool:
        progress.see(int(value), now)
        return progress.t_done is not None

    if not await _poll(url, name, labels, headers, timeout_s, interval_s, seen):
        raise TimeoutError(f"{name} did not reach {progress.total} within {timeout_s:.0f}s")


async def wait_assigned(url: str, group: str, partitions: int, timeout_s: float, headers: dict[str, str]) -> None:
    """Poll a service's /metrics until its consumer ``group`` holds ``partitions`` partitions."""
    if not await _poll(url, "mlops_consumer_assigned_partitions", {"group": group}, headers, timeout_s, 0.05,
                       lambda value, _: value >= partitions):
        raise TimeoutError(f"consumer group {group} did not get its {partitions} partitions within {timeout_s:.0f}s")


async def read_latency(address: str, entities: list[str], calls: int, metadata: list[tuple[str, str]]
                       ) -> tuple[list[float], int]:
    """Sequential GetOnlineFeatures calls for ``entities`` over gRPC; latencies in ms, values per row."""
    async with channel(address) as ch:
        stub = feature_pb2_grpc.FeatureServiceStub(ch)
        request = feature_pb2.OnlineFeaturesRequest(entities=entities)
        for _ in range(20):  # warm-up: connection, script load, caches
            response = await stub.GetOnlineFeatures(request, metadata=metadata)
        found = sum(1 for row in response.rows if row.found)
        if found != len(entities):
            raise RuntimeError(f"only {found} of {len(entities)} entities have features")
        width = len(response.rows[0].values.fields)
        latencies = []
        for _ in range(calls):
            start = time.perf_counter()
            await stub.GetOnlineFeatures(request, metadata=metadata)
            latencies.append((time.perf_counter() - start) * 1000)
    return latencies, width


def summary(latencies: list[float]) -> dict[str, float]:
    return {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "max": max(latencies)}
