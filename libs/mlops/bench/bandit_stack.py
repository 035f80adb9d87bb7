"""A private embedded stack for the router benchmark: broker, redis-server, registry, inference and the
bandit router on ports of the bench's own (``MLOPS_BENCH_PORT_BASE``, default 24300), under a temporary
``MLOPS_HOME``, with auth off (the bench measures the router, not token checks); and a tiny TorchScript
model registered straight through the registry's gRPC API."""

from __future__ import annotations

import contextlib
import io
import os
import platform
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx

from mlops.settings import SERVICES, PlatformSettings, env_name
from mlops.v1 import registry_pb2, registry_pb2_grpc

STACK_SERVICES = ["registry", "inference", "bandit-router"]


@dataclass(frozen=True)
class BenchStack:
    home: Path
    ports: dict[str, tuple[int, int]]

    def grpc(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service][1]}"

    def http(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service][0]}"


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(base: int) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
    ports = {s: (base + 1 + i, base + 21 + i) for i, s in enumerate(SERVICES)}
    env = {"MLOPS_EMBEDDED_KAFKA_PORT": str(base + 41), "MLOPS_EMBEDDED_REDIS_PORT": str(base + 42)}
    for service, (http, grpc_port) in ports.items():
        env[f"MLOPS_{env_name(service)}_HTTP_PORT"] = str(http)
        env[f"MLOPS_{env_name(service)}_GRPC_PORT"] = str(grpc_port)
    busy = [p for p in (*map(int, env.values()),) if not _free(p)]
    if busy:
        raise RuntimeError(f"bench ports {busy} are taken; set MLOPS_BENCH_PORT_BASE to a free block (< 32700)")
    return env, ports


@contextlib.contextmanager
def running(report: object = print, extra_env: dict[str, str] | None = None) -> Iterator[BenchStack]:
    """Start the stack (blocking), yield it, stop it and delete its home."""
    from mlops.stack.supervisor import Supervisor

    base = int(os.environ.get("MLOPS_BENCH_PORT_BASE", "24300"))
    env, ports = _ports(base)
    home = Path(tempfile.mkdtemp(prefix="mlops-bench-router-"))
    saved = dict(os.environ)
    os.environ.update({**env, **(extra_env or {}), "MLOPS_HOME": str(home), "MLOPS_AUTH_ENABLED": "false",
                       "MLOPS_LOG_LEVEL": "WARNING"})
    for name in ("MLOPS_KAFKA_BOOTSTRAP", "MLOPS_REDIS_URL", "MLOPS_AUTH_TOKENS_FILE", "MLOPS_SERVICE_TOKEN",
                 "OTEL_EXPORTER_OTLP_ENDPOINT"):
        os.environ.pop(name, None)
    supervisor = Supervisor(PlatformSettings(), report=report)  # type: ignore[arg-type]
    try:
        supervisor.up(timeout_s=240, only=STACK_SERVICES)
        yield BenchStack(home, ports)
    finally:
        supervisor.down()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(home, ignore_errors=True)


def _artifact() -> bytes:
    import torch

    class Scorer(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p = torch.sigmoid(x.sum(dim=1, keepdim=True))
            return torch.cat([1 - p, p], dim=1)

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Scorer()), buf)
    return buf.getvalue()


def register_model(stack: BenchStack, model: str, stage: str, features: list[str]) -> str:
    """Register a small scorer over ``features``; returns its version."""
    with grpc.insecure_channel(stack.grpc("registry")) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        mv = stub.RegisterModelVersion(registry_pb2.RegisterModelVersionRequest(
            model=model,
            run=registry_pb2.RunInfo(
                experiment=f"{model}-bench", params={"kind": "bench"}, metrics={"accuracy": 1.0}, seed=0,
                dataset_id="ds-bench", git_commit="0" * 40, git_dirty=False,
                python_version=platform.python_version(), hardware="cpu", pip_freeze="torch==2.13.0",
                tags={"mlops.definitions_hash": "bench"},
            ),
            artifact=_artifact(), artifact_format="torchscript",
            signature=registry_pb2.ModelSignature(features=features, input_name="input", output_name="output",
                                                  classes=["0", "1"]),
            stage=stage, reason="router benchmark",
        ), timeout=60)
    return mv.version


def wait_loaded(stack: BenchStack, model: str, version: str, timeout_s: float = 120.0) -> None:
    url = f"{stack.http('inference')}/v2/models/{model}/versions/{version}/ready"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=5).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"inference did not load {model}:{version} in {timeout_s:.0f}s")
