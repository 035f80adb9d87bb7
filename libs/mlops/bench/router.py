"""``./scripts/bench router``: the latency the bandit router adds over calling inference directly, and the
decisions it makes per second.

On a private stack (registry, inference, router; see :mod:`mlops.bench.bandit_stack`) two versions of a
small model are served. One client process alternates blocks of one-row requests between the baseline,
gRPC ``ModelInfer`` straight to inference, and gRPC ``Predict`` through the router (which picks a
variant from the shared statistics in Redis, calls the same ``ModelInfer``, records the decision in Redis
before answering and publishes the prediction after), sequentially so each latency is one request's.
Added latency = router percentile - direct percentile, per policy (``fixed`` over one variant;
``thompson`` over two, the stateful path). Then ``decisions_per_s``: Thompson predictions per second
with 32 requests in flight, beside inference's own rate at the same concurrency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
import numpy as np
from rich.console import Console
from rich.table import Table
from tritonclient.grpc import service_pb2, service_pb2_grpc

from mlops.bench import bandit_stack
from mlops.bench.common import Result, percentile
from mlops.v1 import bandit_router_pb2 as pb
from mlops.v1 import bandit_router_pb2_grpc

MODEL = "bench-router"
FEATURES = ["a", "b"]


def _infer_request(version: str, row: list[float]) -> service_pb2.ModelInferRequest:
    return service_pb2.ModelInferRequest(
        model_name=MODEL,
        model_version=version,
        inputs=[service_pb2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, len(row)])],
        outputs=[service_pb2.ModelInferRequest.InferRequestedOutputTensor(name="output")],
        raw_input_contents=[np.asarray(row, dtype="<f4").tobytes()],
    )


def _predict_request(endpoint: str, row: list[float]) -> pb.PredictRequest:
    request = pb.PredictRequest(endpoint=endpoint)
    request.features.update(dict(zip(FEATURES, row, strict=True)))
    return request


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await call()
    return (time.perf_counter() - start) * 1000.0


async def _latencies(
    direct: Callable[[], Awaitable[Any]], routed: Callable[[], Awaitable[Any]], requests: int, block: int = 50
) -> tuple[list[float], list[float]]:
    """Alternate blocks of direct and routed calls, so drifts in machine load hit both alike."""
    d, r = [], []
    for _ in range(max(1, requests // block)):
        for _ in range(block):
            d.append(await _timed(direct))
        for _ in range(block):
            r.append(await _timed(routed))
    return d, r


async def _rate(call: Callable[[], Awaitable[Any]], concurrency: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def _measure(stack: bandit_stack.BenchStack, quick: bool, console: Console, result: Result) -> None:
    v1 = bandit_stack.register_model(stack, MODEL, "production", FEATURES)
    v2 = bandit_stack.register_model(stack, MODEL, "candidate", FEATURES)
    for version in (v1, v2):
        await asyncio.to_thread(bandit_stack.wait_loaded, stack, MODEL, version)
    endpoints = {
        "fixed": {"variants": [{"name": "a", "model": MODEL, "version": v1}], "policy": {"type": "fixed"}},
        "thompson": {"variants": [{"name": "a", "model": MODEL, "version": v1},
                                  {"name": "b", "model": MODEL, "version": v2}],
                     "policy": {"type": "thompson", "params": {"auto_promote": False}}},
    }
    async with httpx.AsyncClient(timeout=30) as http:
        for name, body in endpoints.items():
            r = await http.put(f"{stack.http('bandit-router')}/v1/endpoints/bench-{name}", json=body)
            r.raise_for_status()

    requests = 600 if quick else 4000
    seconds = 3.0 if quick else 10.0
    rng = np.random.default_rng(0)
    rows = rng.uniform(-1, 1, size=(256, 2)).astype(float).tolist()
    table = Table("path", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms", title="one-row requests, sequential")
    async with grpc.aio.insecure_channel(stack.grpc("inference")) as inf_ch, \
            grpc.aio.insecure_channel(stack.grpc("bandit-router")) as router_ch:
        infer = service_pb2_grpc.GRPCInferenceServiceStub(inf_ch)
        router = bandit_router_pb2_grpc.BanditRouterServiceStub(router_ch)
        counter = iter(range(10**9))

        def direct() -> Awaitable[Any]:
            return infer.ModelInfer(_infer_request(v1, rows[next(counter) % 256]))

        def routed(endpoint: str) -> Callable[[], Awaitable[Any]]:
            return lambda: router.Predict(_predict_request(endpoint, rows[next(counter) % 256]))

        for name in endpoints:  # warm up connections, caches and both code paths
            await _latencies(direct, routed(f"bench-{name}"), 200)
        for name in endpoints:
            d, r = await _latencies(direct, routed(f"bench-{name}"), requests)
            d50, d99, r50, r99 = percentile(d, 50), percentile(d, 99), percentile(r, 50), percentile(r, 99)
            table.add_row(f"direct (vs {name})", f"{d50:.3f}", f"{d99:.3f}", "", "")
            table.add_row(f"router {name}", f"{r50:.3f}", f"{r99:.3f}", f"{r50 - d50:.3f}", f"{r99 - d99:.3f}")
            result.figure(f"direct_p50_ms_{name}", d50)
            result.figure(f"direct_p99_ms_{name}", d99)
            result.figure(f"router_p50_ms_{name}", r50)
            result.figure(f"router_p99_ms_{name}", r99)
            result.figure(f"added_p50_ms_{name}", r50 - d50)
            result.figure(f"added_p99_ms_{name}", r99 - d99)
        console.print(table)
        result.figure("added_p50_ms", result.figures["added_p50_ms_thompson"])
        result.figure("added_p99_ms", result.figures["added_p99_ms_thompson"])
        result.target("added_p99_ms", 2.0, higher_is_better=False)

        console.print(f"throughput: 32 in flight for {seconds:.0f} s each")
        result.figure("inference_direct_per_s_c32", await _rate(direct, 32, seconds))
        result.figure("decisions_per_s", await _rate(routed("bench-thompson"), 32, seconds))
        result.figure("decisions_per_s_fixed", await _rate(routed("bench-fixed"), 32, seconds))


def run(quick: bool, console: Console) -> Result:
    result = Result("router")
    with bandit_stack.running(report=lambda msg: console.log(msg)) as stack:
        asyncio.run(_measure(stack, quick, console, result))
    result.notes.append("added = router percentile - direct ModelInfer percentile, same client, blocks alternated; "
                        "router defaults: the decision is in Redis before each answer, the Prediction record "
                        "goes to Kafka from the outbox right after it (await_publish off)")
    return result
