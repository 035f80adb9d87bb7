"""CPU accounting for benchmarks: where a machine's cores went while a load ran.

Throughput alone cannot say whether a server is slow or the machine is full; these readings can. They come
from Linux's ``/proc`` (a server's process tree, one of its threads, the whole machine) and are ``None``
elsewhere, so a benchmark reports them where it can and runs everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def _stat_fields(path: Path) -> list[str] | None:
    """The fields of a ``stat`` file after the command name (which may hold spaces), or None."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _cpu_s(fields: list[str]) -> float:
    # utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (a server may serve from worker processes)."""
    parents: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry / "stat")
            if fields:
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    stack = [pid]
    while stack:
        kids = parents.get(stack.pop(), [])
        out.extend(kids)
        stack.extend(kids)
    return out


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by ``pid`` (None when it is gone or ``/proc`` cannot say)."""
    fields = _stat_fields(_PROC / str(pid) / "stat")
    return None if fields is None else _cpu_s(fields)


def process_tree_cpu_s(pid: int, kids: list[int] | None = None) -> float | None:
    """CPU seconds used so far by ``pid`` and its descendants (``kids``, found when not given; None where
    ``/proc`` cannot say)."""
    kids = _children(pid) if kids is None else kids
    own = process_cpu_s(pid)
    if own is None:
        return None
    return own + sum(process_cpu_s(kid) or 0.0 for kid in kids)


def main_thread_cpu_s(pid: int) -> float | None:
    """CPU seconds used so far by the main thread of ``pid`` (where a Python server's event loop runs)."""
    fields = _stat_fields(_PROC / str(pid) / "task" / str(pid) / "stat")
    return None if fields is None else _cpu_s(fields)


def machine_idle_s() -> float | None:
    """Idle CPU seconds of the whole machine so far, summed over its cores."""
    try:
        first = (_PROC / "stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    return int(first[4]) * _TICK_S  # "cpu user nice system idle ..."


@dataclass(frozen=True)
class Reading:
    """One moment's counters: the server's tree and main thread, this process, the machine's idle time."""

    server_s: float | None
    server_main_s: float | None
    own_s: float
    idle_s: float | None

    @classmethod
    def now(cls, server_pid: int | None) -> Reading:
        own = os.times()
        server_s = server_main_s = None
        if server_pid:
            # The slow walk of /proc for descendants first, then the main thread and the process read back to
            # back: a tick landing between those two reads would make the thread look busier than its process.
            kids = _children(server_pid)
            server_main_s = main_thread_cpu_s(server_pid)
            server_s = process_tree_cpu_s(server_pid, kids)
        return cls(server_s=server_s, server_main_s=server_main_s, own_s=own.user + own.system,
                   idle_s=machine_idle_s())


def usage(before: Reading, after: Reading, seconds: float, requests: int) -> dict[str, float | None]:
    """CPU per request (microseconds) of the server, its main thread and this process, and the idle cores,
    between two readings ``seconds`` apart during which ``requests`` were answered."""

    def per_request(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or requests <= 0 else (b - a) / requests * 1e6

    return {
        "server_cpu_us_per_req": per_request(before.server_s, after.server_s),
        "server_main_thread_cpu_us_per_req": per_request(before.server_main_s, after.server_main_s),
        "loadgen_cpu_us_per_req": per_request(before.own_s, after.own_s),
        "idle_cores": None if before.idle_s is None or after.idle_s is None or seconds <= 0
        else (after.idle_s - before.idle_s) / seconds,
    }
