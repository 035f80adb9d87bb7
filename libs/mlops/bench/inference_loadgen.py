"""The V2 load generator of ``./scripts/bench inference``: closed-loop clients over gRPC or REST.

Every server in the benchmark is driven by this one program, with the same requests. It runs in its own
process (``python -m mlops.bench.inference_loadgen ...``) so that it never shares a GIL with a server,
and prints one JSON object on stdout.

It is built to cost as little CPU per request as possible, so that the servers, not the client, set the
numbers: gRPC requests are serialized once and sent as bytes through a bare ``unary_unary`` callable
(no protobuf work per call; only a sample of responses is parsed and checked), and REST goes over
hand-written keep-alive HTTP/1.1 connections with a pre-built request. ``concurrency`` clients each send
their next request as soon as the previous answer arrives (a closed loop, as MLServer's and Triton's
own load tools do).

Over the measured window it also reads where the CPU went (:mod:`mlops.bench.cpu`): its own CPU per
request, the server's (``--server-pid``: the process tree and its main thread) and the machine's idle
cores, so a figure can be told apart as the server's limit or the machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops.bench.cpu import Reading, usage

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
#: every this-many responses per client, one is parsed and checked (the first one always is).
CHECK_EVERY = 256


@dataclass
class Stats:
    """What the clients counted while the clock ran."""

    latencies: array = field(default_factory=lambda: array("d"))
    errors: int = 0
    first_error: str = ""
    checked: int = 0

    def error(self, message: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = message[:500]


def rows_payload(rows: int, features: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, features)).astype(np.float32)


# -- gRPC ------------------------------------------------------------------------------------------------
def grpc_request(model: str, x: np.ndarray, input_name: str) -> bytes:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(
        model_name=model,
        inputs=[service_pb2.ModelInferRequest.InferInputTensor(name=input_name, datatype="FP32", shape=list(x.shape))],
        raw_input_contents=[x.astype("<f4").tobytes()],
    )
    return request.SerializeToString()


def check_grpc_response(raw: bytes, rows: int, outputs: int) -> str | None:
    """None when ``raw`` is a ModelInferResponse with ``rows`` x ``outputs`` FP32 values, else the problem."""
    from tritonclient.grpc import service_pb2

    response = service_pb2.ModelInferResponse.FromString(raw)
    if not response.outputs:
        return "response has no outputs"
    out = response.outputs[0]
    if list(out.shape) != [rows, outputs] or out.datatype != "FP32":
        return f"output {out.name} is {out.datatype}{list(out.shape)}, expected FP32[{rows}, {outputs}]"
    if response.raw_output_contents:
        n = len(response.raw_output_contents[0]) // 4
    else:
        n = len(out.contents.fp32_contents)
    if n != rows * outputs:
        return f"output holds {n} values, expected {rows * outputs}"
    return None


async def _grpc_clients(args: argparse.Namespace, stop: Callable[[], bool], stats: Stats,
                        measuring: Callable[[], bool]) -> None:
    import grpc

    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    # A few channels (each its own HTTP/2 connection) so one connection's flow control is not the limit.
    channels = [grpc.aio.insecure_channel(args.target, options=[*options, ("grpc.channel_id", i)])
                for i in range(max(1, min(args.channels, args.concurrency)))]
    calls = [ch.unary_unary(MODEL_INFER) for ch in channels]  # bytes in, bytes out: no protobuf per call

    async def client(i: int) -> None:
        call = calls[i % len(calls)]
        payload = grpc_request(args.model, rows_payload(args.rows, args.features, i), args.input_name)
        n = 0
        while not stop():
            start = time.perf_counter()
            try:
                raw = await call(payload, timeout=30)
            except grpc.aio.AioRpcError as exc:
                if measuring():
                    stats.error(f"{exc.code().name}: {exc.details()}")
                continue
            elapsed = time.perf_counter() - start
            if n % CHECK_EVERY == 0:
                problem = check_grpc_response(raw, args.rows, args.outputs)
                if problem:
                    stats.error(problem)
                stats.checked += 1
            n += 1
            if measuring():
                stats.latencies.append(elapsed)

    try:
        await asyncio.gather(*(client(i) for i in range(args.concurrency)))
    finally:
        for ch in channels:
            await ch.close()


# -- REST ------------------------------------------------------------------------------------------------
def rest_request(host: str, model: str, x: np.ndarray, input_name: str) -> bytes:
    body = json.dumps({"inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]}, separators=(",", ":")).encode()
    head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def check_rest_response(body: bytes, rows: int, outputs: int) -> str | None:
    doc = json.loads(body)
    out = doc.get("outputs", [{}])[0]
    data = out.get("data", [])
    if list(out.get("shape", [])) != [rows, outputs] or len(np.asarray(data).reshape(-1)) != rows * outputs:
        return f"output shape {out.get('shape')} with {len(data)} values, expected [{rows}, {outputs}]"
    return None


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    if length < 0:
        raise RuntimeError("response without Content-Length")
    return status, await reader.readexactly(length)


async def _rest_clients(args: argparse.Namespace, stop: Callable[[], bool], stats: Stats,
                        measuring: Callable[[], bool]) -> None:
    host, _, port = args.target.rpartition(":")

    async def client(i: int) -> None:
        payload = rest_request(args.target, args.model, rows_payload(args.rows, args.features, i), args.input_name)
        reader, writer = await asyncio.open_connection(host, int(port))
        n = 0
        try:
            while not stop():
                start = time.perf_counter()
                writer.write(payload)
                status, body = await _read_response(reader)
                elapsed = time.perf_counter() - start
                if status != 200:
                    if measuring():
                        stats.error(f"HTTP {status}: {body[:300]!r}")
                    continue
                if n % CHECK_EVERY == 0:
                    problem = check_rest_response(body, args.rows, args.outputs)
                    if problem:
                        stats.error(problem)
                    stats.checked += 1
                n += 1
                if measuring():
                    stats.latencies.append(elapsed)
        finally:
            writer.close()

    await asyncio.gather(*(client(i) for i in range(args.concurrency)))


# -- driver ----------------------------------------------------------------------------------------------
def summarize(stats: Stats, seconds: float, rows: int) -> dict[str, Any]:
    lat = np.frombuffer(stats.latencies, dtype=np.float64) if len(stats.latencies) else np.zeros(0)
    n = int(lat.size)
    return {
        "requests": n,
        "seconds": seconds,
        "req_per_s": n / seconds if seconds > 0 else 0.0,
        "rows_per_s": n * rows / seconds if seconds > 0 else 0.0,
        "p50_ms": float(np.percentile(lat, 50) * 1000) if n else None,
        "p99_ms": float(np.percentile(lat, 99) * 1000) if n else None,
        "mean_ms": float(lat.mean() * 1000) if n else None,
        "errors": stats.errors,
        "first_error": stats.first_error,
        "checked": stats.checked,
    }


async def _read_cpu(begin: float, end: float, server_pid: int | None) -> tuple[Reading, Reading]:
    """The CPU counters at the start and at the end of the measured window."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, begin - loop.time()))
    first = Reading.now(server_pid)
    await asyncio.sleep(max(0.0, end - loop.time()))
    return first, Reading.now(server_pid)


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    begin, end = t0 + args.warmup, t0 + args.warmup + args.duration
    clients: Callable[..., Awaitable[None]] = _grpc_clients if args.protocol == "grpc" else _rest_clients
    readings = asyncio.create_task(_read_cpu(begin, end, args.server_pid))
    await clients(args, lambda: loop.time() >= end, stats, lambda: begin <= loop.time() < end)
    first, last = await readings
    return summarize(stats, args.duration, args.rows) | usage(first, last, args.duration, len(stats.latencies))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="inference_loadgen", description=__doc__)
    parser.add_argument("--protocol", choices=["grpc", "rest"], default="grpc")
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--input-name", default="input")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--outputs", type=int, default=2, help="expected outputs per row (checked)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--channels", type=int, default=4, help="gRPC connections shared by the clients")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds sent before measuring")
    parser.add_argument("--server-pid", type=int, default=None,
                        help="the server's process: its CPU per request is measured too (Linux)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
        runner = asyncio.run
    result = runner(drive(args))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
