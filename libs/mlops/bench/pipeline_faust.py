"""faust-streaming on the embedded broker: the feature computation as the issue first sketched it (a faust
agent with tables), measured the way ``bench pipeline`` measures the platform, to decide between the two.

``python -m mlops.bench.pipeline_faust [--events N]`` starts a private broker, preloads N keyed events, runs a
faust worker (the platform's faust app factory, tuned group timings) whose agent keeps two tables per
entity (a count and a one-hour tumbling sum, the windowed table faust offers), and reports:

- seconds from worker start to the first event processed;
- events per second through the agent (between 10% and 90% of the backlog);
- after ``kill -9`` of the worker half-way through a second backlog and a restart: seconds until it
  processes again, and how many events its tables counted twice (faust's guarantee here is at least
  once: the embedded broker has no transactions, so ``processing_guarantee="exactly_once"`` cannot run).

The worker prints a line per 1,000 events and every second (``PROGRESS <unix time> <events> <table total>``);
the parent reads them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

TOPIC = "faust-bench-events"
PARTITIONS = 4


def build_app(bootstrap: str, home: Path) -> Any:
    """The agent: per entity, a count table and a one-hour tumbling sum table, both changelogged."""

    from mlops.bus.faust_app import make_app
    from mlops.settings import PlatformSettings

    settings = PlatformSettings(kafka_bootstrap=bootstrap, home=home, topic_partitions=PARTITIONS)
    (home / "faust").mkdir(parents=True, exist_ok=True)  # make_app's datadir is <home>/faust/<app id>
    app = make_app("faust-bench", settings)
    events = app.topic(TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                       partitions=PARTITIONS)
    counts = app.Table("counts", default=int, key_type=str, value_type=int, partitions=PARTITIONS)
    sums = app.Table("sums_1h", default=float, key_type=str, value_type=float,
                     partitions=PARTITIONS).tumbling(3600, expires=7200)
    state = {"n": 0}

    def report() -> None:
        print(f"PROGRESS {time.time():.4f} {state['n']} {sum(counts.values())}", flush=True)

    @app.agent(events)
    async def process(stream: Any) -> None:
        async for key, value in stream.items():
            event = json.loads(value)
            entity = key.decode()
            counts[entity] += 1
            sums[entity] += event["amount"]
            state["n"] += 1
            if state["n"] % 1000 == 0:
                report()

    @app.timer(interval=1.0)
    async def tick() -> None:
        if state["n"]:
            report()

    return app


def worker(bootstrap: str, home: Path) -> None:
    app = build_app(bootstrap, home)
    sys.argv = ["faust", "worker", "--loglevel", "warn", "--without-web"]
    app.main()


async def _topic_and_backlog(bootstrap: str, n: int, seed: int, create: bool) -> None:
    if create:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
        finally:
            await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i in range(n):
            key = f"c{(i * 7919 + seed) % 2000}".encode()
            value = json.dumps({"entity_id": key.decode(), "amount": float(i % 100), "seq": i}).encode()
            futures.append(await producer.send(TOPIC, value=value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class _Worker:
    def __init__(self, bootstrap: str, home: Path, log: Path) -> None:
        self.log = log
        self.started = time.time()
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlops.bench.pipeline_faust", "--worker", "--bootstrap", bootstrap,
                 "--home", str(home)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def progress(self) -> list[tuple[float, int, int]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if "PROGRESS " in line:  # faust routes print() through its logger: a prefix comes first
                t, n, total = line.split("PROGRESS ", 1)[1].split()[:3]
                out.append((float(t), int(n), int(total)))
        return out

    def wait_for(self, events: int, timeout_s: float) -> list[tuple[float, int, int]]:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            seen = [p for p in self.progress() if p[0] >= self.started]
            if seen and seen[-1][1] >= events:
                return seen
            if self.proc.poll() is not None:
                raise RuntimeError(f"the faust worker exited; its log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"the faust worker did not reach {events} events in {timeout_s:.0f}s")

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill9()


def measure(n: int, port: int) -> dict[str, float]:
    from mlops.stack.supervisor import tansu_binary

    home = Path(tempfile.mkdtemp(prefix="mlops-faust-bench-"))
    bootstrap = f"127.0.0.1:{port}"
    url = f"tcp://{bootstrap}"
    broker = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url",
                               url, "--storage-engine", "memory://tansu/"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    log = home / "worker.log"
    figures: dict[str, float] = {}
    workers: list[_Worker] = []
    try:
        time.sleep(1.0)
        asyncio.run(_topic_and_backlog(bootstrap, n, 0, create=True))
        first = _Worker(bootstrap, home, log)
        workers.append(first)
        seen = first.wait_for(n, 600)
        figures["faust_seconds_to_first_event"] = seen[0][0] - first.started - 1000 / max(1.0, _rate(seen, n))
        figures["faust_events_per_s"] = _rate(seen, n)
        # A second backlog, kill -9 half-way, restart: how long until it works again, and what it counted twice.
        asyncio.run(_topic_and_backlog(bootstrap, n, 1, create=False))
        before = seen[-1][1]
        first.wait_for(before + n // 2, 600)
        first.kill9()
        killed_at = time.time()
        second = _Worker(bootstrap, home, log)
        workers.append(second)
        done = second.wait_for(1, 600)
        figures["faust_seconds_restart_to_first_event"] = done[0][0] - killed_at
        # The tables are restored from their changelogs; let the restarted worker finish the backlog (its
        # table total stops moving), then compare that total with the events that exist.
        final, stable_since, deadline = -1, time.time(), time.time() + 600
        while time.time() < deadline and time.time() - stable_since < 8.0:
            latest = second.progress()[-1][2]
            if latest != final:
                final, stable_since = latest, time.time()
            time.sleep(0.5)
        figures["faust_events_counted_twice_after_kill9"] = max(0, final - 2 * n)
        figures["faust_events_lost_after_kill9"] = max(0, 2 * n - final)
        second.stop()
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.kill9()
        os.killpg(broker.pid, signal.SIGTERM)
        broker.wait(30)
        shutil.rmtree(home, ignore_errors=True)
    return figures


def _rate(progress: list[tuple[float, int, int]], n: int) -> float:
    lo = next(t for t, k, _ in progress if k >= 0.1 * n)
    hi = next(t for t, k, _ in progress if k >= 0.9 * n)
    return 0.8 * n / (hi - lo) if hi > lo else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLOPS_BENCH_PORT_BASE", "27400")) + 93)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.bootstrap, args.home)
        return
    print(json.dumps(measure(args.events, args.port), indent=2))


if __name__ == "__main__":
    main()
