"""CPU accounting of the benchmarks: a process tree's CPU, its main thread's, per-request arithmetic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mlops.bench import cpu

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"


@pytest.mark.skipif(sys.platform != "linux",
                    reason="reads Linux's /proc, which this platform has not: here every reading is None by design "
                           "(the benchmarks then leave the CPU keys out); CI runs on Linux, where this test runs")
def test_a_process_tree_counts_its_children() -> None:
    # A parent that sleeps, with a child that burns 0.3 s of CPU then sleeps: the tree holds the child's CPU.
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time\n"
                               f"subprocess.Popen([sys.executable, '-c', {BURN!r}])\ntime.sleep(30)"],
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while (cpu.process_tree_cpu_s(parent.pid) or 0) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree, own, main = (cpu.process_tree_cpu_s(parent.pid), cpu.process_cpu_s(parent.pid),
                           cpu.main_thread_cpu_s(parent.pid))
        assert tree is not None and own is not None and main is not None
        assert tree >= 0.3 and own < 0.3 and main <= own  # the burn happened in the child
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    assert cpu.process_cpu_s(parent.pid) is None and cpu.process_tree_cpu_s(parent.pid) is None  # gone


def test_usage_per_request_and_idle_cores() -> None:
    before = cpu.Reading(server_s=1.0, server_main_s=0.5, own_s=2.0, idle_s=10.0)
    after = cpu.Reading(server_s=1.3, server_main_s=0.7, own_s=2.1, idle_s=10.4)
    u = cpu.usage(before, after, seconds=2.0, requests=1000)
    assert u["server_cpu_us_per_req"] == pytest.approx(300.0)
    assert u["server_main_thread_cpu_us_per_req"] == pytest.approx(200.0)
    assert u["loadgen_cpu_us_per_req"] == pytest.approx(100.0)
    assert u["idle_cores"] == pytest.approx(0.2)
    none = cpu.usage(cpu.Reading(None, None, 2.0, None), cpu.Reading(None, None, 2.1, None), 2.0, 0)
    assert none == {"server_cpu_us_per_req": None, "server_main_thread_cpu_us_per_req": None,
                    "loadgen_cpu_us_per_req": None, "idle_cores": None}
