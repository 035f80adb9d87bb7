"""The inference benchmark's parts that are cheap to run: the load generator against the no-op V2 server
(gRPC) and the naive server (REST), and the contract keys computed from measured samples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops.bench import inference as bench
from mlops.bench.common import Result
from mlops.bench.inference_loadgen import drive, parse_args
from mlops.bench.inference_servers import build_mlp

BASE = int(os.environ.get("MLOPS_TEST_PORT_BASE", "28100")) + 940  # below the ephemeral range


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mlp(tmp_path_factory.mktemp("bench") / "mlp.pt")


def serve(kind: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "mlops.bench.inference_servers", kind, "--port", str(port), *extra],
                            env=bench.clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


@pytest.mark.parametrize(("kind", "protocol"), [("noop", "grpc"), ("naive", "rest")])
async def test_load_generator_drives_a_v2_server(model: Path, kind: str, protocol: str) -> None:
    port = BASE + (0 if kind == "noop" else 1)
    proc = serve(kind, port, *(["--model", str(model)] if kind == "naive" else []))
    target = bench.Target(kind, protocol, port, proc)
    try:
        bench.wait_ready(target, 60, Path(os.devnull))
        args = parse_args(["--protocol", protocol, "--target", f"127.0.0.1:{port}", "--rows", "3",
                           "--concurrency", "4", "--duration", "0.5", "--warmup", "0.1", "--server-pid", str(proc.pid)])
        result = await drive(args)
    finally:
        bench.stop(proc)
    assert result["errors"] == 0, result["first_error"]
    assert result["requests"] > 0 and result["checked"] >= 4
    assert result["rows_per_s"] == pytest.approx(3 * result["req_per_s"])
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    if sys.platform == "linux":  # where the CPU is read: the server and the load generator both worked
        assert result["server_cpu_us_per_req"] > 0 and result["loadgen_cpu_us_per_req"] > 0
        # A thread and its process are two /proc reads: a clock tick may land between them at either reading.
        tick_us_per_req = 2 * 1e6 / os.sysconf("SC_CLK_TCK") / result["requests"]
        assert 0 < result["server_main_thread_cpu_us_per_req"] <= result["server_cpu_us_per_req"] + tick_us_per_req
        assert 0 <= result["idle_cores"] <= (os.cpu_count() or 1)


def test_the_load_generator_reports_wrong_answers(model: Path) -> None:
    port = BASE + 2
    proc = serve("noop", port)
    try:
        bench.wait_ready(bench.Target("noop", "grpc", port, proc), 60, Path(os.devnull))
        out = subprocess.run([sys.executable, "-m", "mlops.bench.inference_loadgen", "--target", f"127.0.0.1:{port}",
                              "--outputs", "3", "--duration", "0.3", "--warmup", "0"],
                             env=bench.clean_env(), capture_output=True, text=True, timeout=60)
    finally:
        bench.stop(proc)
    assert '"errors": 0' not in out.stdout and "expected FP32[1, 3]" in out.stdout


def sample(req_per_s: float, rows: int, p99: float) -> dict[str, float]:
    return {"req_per_s": req_per_s, "rows_per_s": req_per_s * rows, "p50_ms": p99 / 2, "p99_ms": p99, "errors": 0}


def test_contract_keys_and_targets_from_samples() -> None:
    plan = bench.Plan(levels=(64,), rounds=1, seconds=1, warmup=0, raw_seconds=1)
    rates = {"service": 3000, "service_rest": 900, "noop": 4000, "naive": 500, "mlserver": 1000}
    targets = []
    for name, rate in rates.items():
        t = bench.Target(name, "grpc", 0)
        t.samples = {(1, 64): [sample(rate, 1, 50 if name == "service" else 100)],
                     (64, 64): [sample(rate / 2, 64, 80)]}
        targets.append(t)
    raw = bench.Target("raw", "raw", 0)
    raw.samples = {(1, 0): [sample(30000, 1, 0.03)], (64, 0): [sample(10000, 64, 0.1)]}
    result = Result("inference")
    bench.report(result, targets, plan, raw)
    f = result.figures
    assert f["throughput_ratio_vs_naive_c64"] == 6.0 and f["throughput_ratio_vs_mlserver_c64"] == 3.0
    assert f["p99_ratio_vs_mlserver_c64"] == 0.5 and f["fraction_of_noop_server_c64"] == 0.75
    assert f["fraction_of_raw_forward_batch64_c64"] == pytest.approx(1500 * 64 / 640000)
    assert {k for k, t in result.targets.items() if t["met"]} == {
        "throughput_ratio_vs_naive_c64", "throughput_ratio_vs_mlserver_c64", "p99_ratio_vs_mlserver_c64",
        "fraction_of_noop_server_c64"}


def test_the_cpu_budget_of_the_targets_from_samples() -> None:
    plan = bench.Plan(levels=(64,), rounds=1, seconds=1, warmup=0, raw_seconds=1)
    cpu = {"server_cpu_us_per_req": 120.0, "server_main_thread_cpu_us_per_req": 80.0,
           "loadgen_cpu_us_per_req": 80.0, "idle_cores": 0.1}
    targets = []
    for name, rate in {"service": 3000, "noop": 4000, "naive": 500}.items():
        t = bench.Target(name, "grpc", 0)
        t.samples = {(1, 64): [sample(rate, 1, 10) | cpu], (64, 64): [sample(rate / 2, 64, 10) | cpu]}
        targets.append(t)
    raw = bench.Target("raw", "raw", 0)
    # 64-row batches: 960,000 rows/s, 50 us each.
    raw.samples = {(1, 0): [sample(30000, 1, 0.03)], (64, 0): [sample(15000, 64, 0.1) | {"p50_ms": 0.05}]}
    result = Result("inference")
    bench.report(result, targets, plan, raw)
    f = result.figures
    assert f["noop_1row_c64_server_cpu_us_per_req"] == 120.0 and f["noop_64row_c64_idle_cores"] == 0.1
    # Half the raw pass: 7,500 requests/s, each 120 + 80 us of transport and 50 us of forward pass.
    assert f["cores_needed_for_fraction_of_raw_forward_target"] == pytest.approx(7500 * 250 / 1e6)
    # Five times the naive server: 2,500 requests/s at 200 us, the no-op's event loop at 80 us of them.
    assert f["cores_needed_for_naive_target"] == pytest.approx(0.5)
    assert f["noop_event_loop_load_at_naive_target"] == pytest.approx(0.2)
    needs = f["cores_needed_for_fraction_of_raw_forward_target"]
    assert (needs > (os.cpu_count() or 1)) == any("this machine has" in note for note in result.notes)
