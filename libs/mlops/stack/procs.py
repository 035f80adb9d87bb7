"""Starting, finding and stopping the local processes of the stack, tracked in ``$MLOPS_HOME/run/stack.json``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Proc:
    """One process the stack started."""

    name: str
    pid: int
    cmd: list[str]
    log: str
    http: str | None = None
    grpc: str | None = None
    kind: str = "service"  # broker | redis | service
    started_at: float = field(default_factory=time.time)


@dataclass
class StackState:
    procs: list[Proc] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Proc | None:
        return next((p for p in self.procs if p.name == name), None)

    def put(self, proc: Proc) -> None:
        self.procs = [p for p in self.procs if p.name != proc.name] + [proc]


def state_path(home: Path) -> Path:
    return home / "run" / "stack.json"


def load(home: Path) -> StackState:
    path = state_path(home)
    if not path.exists():
        return StackState()
    raw = json.loads(path.read_text())
    return StackState(procs=[Proc(**p) for p in raw.get("procs", [])], env=raw.get("env", {}))


def save(home: Path, state: StackState) -> None:
    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"procs": [asdict(p) for p in state.procs], "env": state.env}, indent=2))
    os.chmod(tmp, 0o600)  # the env holds the services' token
    tmp.replace(path)


def running(pid: int) -> bool:
    """The pid exists and is not a zombie (used while a process starts, when its command line may still
    read as the parent's or be empty)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, PermissionError, OSError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def alive(proc: Proc) -> bool:
    """True when ``proc.pid`` runs and is still the process we started (pids get reused)."""
    try:
        os.kill(proc.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    if not cmdline or not cmdline[0]:
        # redis-server rewrites its title at start; for an instant the command line reads empty.
        return True
    # redis-server rewrites its title to "path host:port", so compare the first word's basename.
    first = cmdline[0].decode(errors="replace").split()[0]
    return Path(first).name == Path(proc.cmd[0]).name


def spawn(name: str, cmd: list[str], log_path: Path, env: dict[str, str], **extra: object) -> Proc:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}: {' '.join(cmd)}\n".encode())
        p = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    return Proc(name=name, pid=p.pid, cmd=cmd, log=str(log_path), **extra)  # type: ignore[arg-type]


def terminate(proc: Proc, timeout_s: float = 30.0) -> None:
    """SIGTERM, wait for the pid to exit (a consumer caught mid-rebalance can be slow), then SIGKILL."""
    if not alive(proc):
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if not alive(proc):
            _reap(proc.pid)
            return
        _reap(proc.pid)
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(proc.pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_open(address: str, timeout_s: float = 0.5) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def tail(path: str | Path, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
