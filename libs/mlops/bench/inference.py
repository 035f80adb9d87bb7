"""``./scripts/bench inference``: the inference service beside its baselines, in one run.

The same model (an MLP 32 -> 256 -> 256 -> 2, TorchScript) is driven by the same V2 load generator
(:mod:`mlops.bench.inference_loadgen`, its own process) at concurrency 1, 16, 64 and 256, with one-row
requests and with 64-row requests, against:

- ``service``: the platform's inference service (``python -m services.inference``), serving the model
  from a local model repository (``MLOPS_INFERENCE_MODEL_REPOSITORY``), prediction log off, over gRPC
  (``service``) and REST (``service_rest``);
- ``naive``: a per-request FastAPI + torch server, V2 JSON over REST (:mod:`mlops.bench.inference_servers`);
- ``mlserver``: MLServer 1.7.1 with adaptive batching, in its own venv (:mod:`mlops.bench.inference_mlserver`);
- ``noop``: a V2 gRPC server on the service's stack that answers zeros without a model (transport ceiling);
- ``raw``: the model's forward pass in a loop, batches of 1 and 64 rows (compute ceiling), frozen and
  ``optimize_for_inference``-d as the service serves it.

The machine is shared and noisy, so each level is measured in rounds: every round runs every server once,
in a rotating order, and a server's figure is its median over the rounds. Ratios compare servers
measured in the same rounds. Every server, the raw loop included, uses one torch thread.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mlops.bench import inference_mlserver as mlserver
from mlops.bench.common import Result
from mlops.bench.inference_servers import FEATURES, OUTPUTS, build_mlp
from mlops.settings import REPO_ROOT, PlatformSettings

MODEL = "mlp"
SERIES = (1, 64)  # rows per request
#: what the load generator reads of the CPU over a measured window (see mlops.bench.cpu).
CPU_KEYS = ("server_cpu_us_per_req", "server_main_thread_cpu_us_per_req", "loadgen_cpu_us_per_req", "idle_cores")


@dataclass(frozen=True)
class Plan:
    levels: tuple[int, ...]
    rounds: int
    seconds: float
    warmup: float
    raw_seconds: float

    @classmethod
    def of(cls, quick: bool) -> Plan:
        if quick:
            return cls(levels=(64,), rounds=3, seconds=2.0, warmup=0.5, raw_seconds=1.0)
        return cls(levels=(1, 16, 64, 256), rounds=5, seconds=2.0, warmup=0.7, raw_seconds=1.0)


@dataclass
class Target:
    """One server under test and how the load generator reaches it."""

    name: str
    protocol: str  # grpc | rest
    port: int
    proc: subprocess.Popen[bytes] | None = None
    samples: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)
    #: the process whose CPU is read while this target is measured (the service's for its REST side).
    pid: int | None = None


# -- processes -------------------------------------------------------------------------------------------
def free_ports(n: int, base: int) -> list[int]:
    """``n`` ports free now, scanning up from ``base`` (kept below the ephemeral range)."""
    ports: list[int] = []
    port = base
    while len(ports) < n and port < 32768:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                ports.append(port)
            except OSError:
                pass
        port += 1
    if len(ports) < n:
        raise RuntimeError(f"no {n} free ports from {base}")
    return ports


def spawn(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group the bench started, SIGKILL it after 10 s."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def grpc_ready(port: int) -> bool:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            return stub.ModelReady(service_pb2.ModelReadyRequest(name=MODEL), timeout=2).ready
        except grpc.RpcError:
            return False


def rest_ready(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(target: Target, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    check = grpc_ready if target.protocol == "grpc" else rest_ready
    while time.monotonic() < deadline:
        if target.proc is not None and target.proc.poll() is not None:
            raise RuntimeError(f"{target.name} exited: {log.read_text(errors='replace')[-2000:]}")
        if check(target.port):
            return
        time.sleep(0.3)
    raise RuntimeError(f"{target.name} not ready after {timeout_s:.0f} s: {log.read_text(errors='replace')[-2000:]}")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "libs"), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


# -- measuring -------------------------------------------------------------------------------------------
def loadgen(target: Target, rows: int, concurrency: int, plan: Plan) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "mlops.bench.inference_loadgen", "--protocol", target.protocol,
           "--target", f"127.0.0.1:{target.port}", "--model", MODEL, "--rows", str(rows),
           "--features", str(FEATURES), "--outputs", str(OUTPUTS), "--concurrency", str(concurrency),
           "--duration", str(plan.seconds), "--warmup", str(plan.warmup)]
    pid = target.pid or (target.proc.pid if target.proc is not None else None)
    if pid:
        cmd += ["--server-pid", str(pid)]
    out = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=plan.seconds * 4 + 120)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed against {target.name}: {out.stderr[-1500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def raw_forward(model: Path, rows: int, seconds: float) -> dict[str, Any]:
    """The compute ceiling as a sample shaped like the load generator's (one batch = one "request")."""
    cmd = [sys.executable, "-m", "mlops.bench.inference_servers", "raw", "--model", str(model),
           "--rows", str(rows), "--seconds", str(seconds)]
    out = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=seconds * 3 + 120)
    if out.returncode != 0:
        raise RuntimeError(f"raw forward failed: {out.stderr[-1500:]}")
    raw = json.loads(out.stdout.strip().splitlines()[-1])
    return {"req_per_s": raw["batches_per_s"], "rows_per_s": raw["rows_per_s"],
            "p50_ms": raw["us_per_batch"] / 1000, "p99_ms": None, "errors": 0, "first_error": ""}


def median_of(samples: list[dict[str, Any]], key: str) -> float:
    values = [s[key] for s in samples if s.get(key) is not None]
    return statistics.median(values) if values else float("nan")


@contextlib.contextmanager
def servers(workdir: Path, model: Path, console: Console, notes: list[str]) -> Iterator[list[Target]]:
    """Start every server (the service, the baselines, MLServer when it can be installed); stop them after."""
    base = int(os.environ.get("MLOPS_BENCH_PORT_BASE", "24100"))
    ports = iter(free_ports(8, base))
    logs = workdir / "logs"
    logs.mkdir()
    repo = workdir / "models"
    (repo / MODEL / "1").mkdir(parents=True)
    (repo / MODEL / "1" / "model.pt").write_bytes(model.read_bytes())
    (repo / MODEL / "signature.json").write_text(json.dumps({"n_features": FEATURES}))

    service_http, service_grpc = next(ports), next(ports)
    service = Target("service", "grpc", service_grpc)
    service_rest = Target("service_rest", "rest", service_http)
    noop = Target("noop", "grpc", next(ports))
    naive = Target("naive", "rest", next(ports))
    targets = [service, service_rest, noop, naive]
    started: list[tuple[Target, Path]] = []
    try:
        service.proc = spawn([sys.executable, "-m", "services.inference"], clean_env(
            MLOPS_HOME=str(workdir / "home"),
            MLOPS_LOG_LEVEL="WARNING",
            MLOPS_INFERENCE_HTTP_PORT=str(service_http),
            MLOPS_INFERENCE_GRPC_PORT=str(service_grpc),
            MLOPS_INFERENCE_MODEL_REPOSITORY=str(repo),
            MLOPS_INFERENCE_PREDICTION_LOG="false",
            MLOPS_INFERENCE_TORCH_THREADS="1",
        ), logs / "service.log")
        service_rest.proc = None  # the same process
        service_rest.pid = service.proc.pid
        started.append((service, logs / "service.log"))
        noop.proc = spawn([sys.executable, "-m", "mlops.bench.inference_servers", "noop", "--port", str(noop.port)],
                          clean_env(), logs / "noop.log")
        started.append((noop, logs / "noop.log"))
        naive.proc = spawn([sys.executable, "-m", "mlops.bench.inference_servers", "naive", "--port",
                            str(naive.port), "--model", str(model)], clean_env(), logs / "naive.log")
        started.append((naive, logs / "naive.log"))

        exe, why = mlserver.ensure_venv(PlatformSettings().home, console)
        if exe is None:
            notes.append(f"MLServer not measured: {why}")
            console.print(f"[yellow]{notes[-1]}[/yellow]")
        else:
            grpc_port, http_port, metrics_port = next(ports), next(ports), next(ports)
            root = mlserver.prepare(workdir, model, http_port=http_port, grpc_port=grpc_port,
                                    metrics_port=metrics_port)
            ml = Target("mlserver", "grpc", grpc_port)
            ml.proc = spawn(mlserver.command(exe, root), clean_env(), logs / "mlserver.log", cwd=root)
            targets.append(ml)
            started.append((ml, logs / "mlserver.log"))
        for target, log in started:
            wait_ready(target, 180, log)
        wait_ready(service_rest, 30, logs / "service.log")
        console.print(f"servers ready: {', '.join(t.name for t in targets)}")
        yield targets
    finally:
        for target, _ in started:
            stop(target.proc)


def measure(targets: list[Target], raw: Target, model: Path, plan: Plan, console: Console) -> None:
    """Every level in rounds; each round runs every server once (rotating the order) and the raw forward
    pass once, so drifting load from elsewhere on the machine hits every figure alike."""
    for rows in SERIES:
        for concurrency in plan.levels:
            for r in range(plan.rounds):
                order = targets[r % len(targets):] + targets[: r % len(targets)]
                for target in order:
                    sample = loadgen(target, rows, concurrency, plan)
                    target.samples.setdefault((rows, concurrency), []).append(sample)
                    if sample["errors"]:
                        console.print(f"[red]{target.name} rows={rows} c={concurrency}: {sample['errors']} errors: "
                                      f"{sample['first_error']}[/red]")
                raw.samples.setdefault((rows, 0), []).append(raw_forward(model, rows, plan.raw_seconds))
            table = Table("server", "req/s", "rows/s", "p50 ms", "p99 ms", "errors",
                          title=f"{rows}-row requests, concurrency {concurrency} (median of {plan.rounds} rounds)")
            for t in targets:
                s = t.samples[(rows, concurrency)]
                table.add_row(t.name, f"{median_of(s, 'req_per_s'):,.0f}", f"{median_of(s, 'rows_per_s'):,.0f}",
                              f"{median_of(s, 'p50_ms'):.2f}", f"{median_of(s, 'p99_ms'):.2f}",
                              str(sum(x["errors"] for x in s)))
            table.add_row("raw forward", "", f"{median_of(raw.samples[(rows, 0)], 'rows_per_s'):,.0f}",
                          f"{median_of(raw.samples[(rows, 0)], 'p50_ms'):.3f}", "", "")
            console.print(table)


def report(result: Result, targets: list[Target], plan: Plan, raw: Target) -> None:
    """The contract's ratios (with their targets) first, then every server's medians per level."""
    f: dict[str, float] = {}
    for (rows, _), samples in raw.samples.items():
        f[f"raw_forward_batch{rows}_rows_per_s"] = median_of(samples, "rows_per_s")
    for t in targets:
        for (rows, c), samples in t.samples.items():
            prefix = f"{t.name}_{rows}row_c{c}"
            f[f"{prefix}_req_per_s"] = median_of(samples, "req_per_s")
            f[f"{prefix}_rows_per_s"] = median_of(samples, "rows_per_s")
            f[f"{prefix}_p50_ms"] = median_of(samples, "p50_ms")
            f[f"{prefix}_p99_ms"] = median_of(samples, "p99_ms")
            f[f"{prefix}_errors"] = sum(s["errors"] for s in samples)
            for key in CPU_KEYS:
                value = median_of(samples, key)
                if not math.isnan(value):  # the CPU was read (Linux)
                    f[f"{prefix}_{key}"] = value

    def ratio(a: str, b: str) -> float:
        return f[a] / f[b] if f.get(a) is not None and f.get(b) else float("nan")

    if 64 in plan.levels:
        ratios = {
            "throughput_ratio_vs_naive_c64": (ratio("service_1row_c64_req_per_s", "naive_1row_c64_req_per_s"), 5.0),
            "fraction_of_noop_server_c64": (ratio("service_1row_c64_req_per_s", "noop_1row_c64_req_per_s"), 0.7),
            "fraction_of_raw_forward_batch64_c64": (
                ratio("service_64row_c64_rows_per_s", "raw_forward_batch64_rows_per_s"), 0.5),
        }
        if "mlserver_1row_c64_req_per_s" in f:
            ratios["throughput_ratio_vs_mlserver_c64"] = (
                ratio("service_1row_c64_req_per_s", "mlserver_1row_c64_req_per_s"), 2.0)
            ratios["p99_ratio_vs_mlserver_c64"] = (
                ratio("service_1row_c64_p99_ms", "mlserver_1row_c64_p99_ms"), 1.0)
        for key, (value, target) in ratios.items():
            result.figure(key, value)
            result.target(key, target, higher_is_better=not key.startswith("p99_ratio"))
        result.figure("throughput_ratio_vs_naive_c64_rest",
                      ratio("service_rest_1row_c64_req_per_s", "naive_1row_c64_req_per_s"))
        result.figure("noop_fraction_of_raw_forward_batch64_c64",
                      ratio("noop_64row_c64_rows_per_s", "raw_forward_batch64_rows_per_s"))
        if "mlserver_64row_c64_req_per_s" in f:
            result.figure("throughput_ratio_vs_mlserver_c64_64row",
                          ratio("service_64row_c64_req_per_s", "mlserver_64row_c64_req_per_s"))
        cpu_budget(result, f, raw)
    for key, value in f.items():
        result.figure(key, value)


def cpu_budget(result: Result, f: dict[str, float], raw: Target) -> None:
    """The cores two targets need at the least, measured in this run: at the target's rate, each request costing
    the no-op server's CPU and the load generator's (and, for 64 rows, the raw forward pass of its rows). No
    server that does the work can need less; beside the machine's core count this says whether a target is
    within reach of this machine at all."""
    cpus = os.cpu_count() or 1

    def cpu(prefix: str) -> float | None:
        server, loadgen = f.get(f"{prefix}_server_cpu_us_per_req"), f.get(f"{prefix}_loadgen_cpu_us_per_req")
        return None if server is None or loadgen is None else server + loadgen

    transport64, raw64 = cpu("noop_64row_c64"), raw.samples.get((64, 0))
    if transport64 is not None and raw64 and f.get("raw_forward_batch64_rows_per_s"):
        rate = 0.5 * f["raw_forward_batch64_rows_per_s"] / 64
        forward_us = median_of(raw64, "p50_ms") * 1000
        need = rate * (transport64 + forward_us) / 1e6
        result.figure("cores_needed_for_fraction_of_raw_forward_target", need)
        if need > cpus:
            result.notes.append(
                f"fraction_of_raw_forward_batch64_c64 >= 0.5 means {rate:,.0f} 64-row requests/s; at the no-op "
                f"server's and the load generator's CPU per request ({transport64:.0f} us) plus the raw forward "
                f"pass ({forward_us:.0f} us) that is {need:.2f} cores, and this machine has {cpus}")
    transport1, naive = cpu("noop_1row_c64"), f.get("naive_1row_c64_req_per_s")
    if transport1 is not None and naive:
        result.figure("cores_needed_for_naive_target", 5 * naive * transport1 / 1e6)
        main = f.get("noop_1row_c64_server_main_thread_cpu_us_per_req")
        if main is not None:
            result.figure("noop_event_loop_load_at_naive_target", 5 * naive * main / 1e6)


def run(quick: bool, console: Console) -> Result:
    plan = Plan.of(quick)
    result = Result("inference")
    result.notes.append(
        "one torch thread everywhere; service: defaults (dynamic batching up to 256 rows, 2 ms, adaptive; "
        "forward executor auto: inline while passes average under 1 ms) with a local model repository, the "
        "prediction log off, auth off and tracing off (no OTLP endpoint); "
        "naive: FastAPI + torch, V2 JSON over REST (uvicorn); mlserver: 1.7.1 defaults (one parallel worker), "
        "adaptive batching max_batch_size 64 requests, max_batch_time 2 ms, debug off; ratios vs naive use the "
        "service over gRPC (throughput_ratio_vs_naive_c64) and over REST (..._rest); figures are medians over "
        "rounds; every ratio at concurrency 64, one-row requests unless named 64row")
    raw = Target("raw", "raw", 0)
    with tempfile.TemporaryDirectory(prefix="mlops-bench-inference-") as tmp:
        workdir = Path(tmp)
        model = build_mlp(workdir / "mlp.pt")
        with servers(workdir, model, console, result.notes) as targets:
            measure(targets, raw, model, plan, console)
        report(result, targets, plan, raw)
    return result
