"""The dynamic batcher: merging concurrent requests, splitting results back, limits and failures."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from mlops.errors import Unavailable
from services.inference import metrics
from services.inference.batcher import DynamicBatcher, ResourceExhausted, split_rows


class Recorder:
    """A forward pass that doubles its input and records the batch sizes it saw."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        with self.lock:
            self.batches.append(rows.shape[0])
        if self.fail:
            raise RuntimeError("boom")
        return rows * 2.0


def test_split_rows() -> None:
    out = np.arange(12, dtype=np.float32).reshape(6, 2)
    parts = split_rows(out, [1, 3, 2])
    assert [p.shape[0] for p in parts] == [1, 3, 2]
    np.testing.assert_array_equal(np.concatenate(parts), out)
    assert split_rows(out, [6])[0] is out
    with pytest.raises(RuntimeError):
        split_rows(out, [2, 2])


async def test_concurrent_requests_share_a_batch_and_get_their_own_rows() -> None:
    fwd = Recorder()
    batcher = DynamicBatcher(fwd, max_batch_size=64, max_queue_delay_s=0.05, adaptive=False)
    batcher.start()
    inputs = [np.full((i % 3 + 1, 2), i, dtype=np.float32) for i in range(10)]
    results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, x * 2.0)
    assert fwd.batches == [sum(x.shape[0] for x in inputs)]
    await batcher.close()


async def test_batches_never_exceed_max_batch_size() -> None:
    fwd = Recorder()
    batcher = DynamicBatcher(fwd, max_batch_size=8, max_queue_delay_s=0.01, adaptive=False)
    batcher.start()
    inputs = [np.full((3, 1), i, dtype=np.float32) for i in range(10)]
    results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, x * 2.0)
    assert max(fwd.batches) <= 8
    assert sum(fwd.batches) == 30
    await batcher.close()


async def test_oversized_request_runs_alone() -> None:
    fwd = Recorder()
    batcher = DynamicBatcher(fwd, max_batch_size=4, max_queue_delay_s=0.0)
    batcher.start()
    big = np.ones((10, 2), dtype=np.float32)
    np.testing.assert_array_equal(await batcher.submit(big), big * 2)
    assert fwd.batches == [10]
    await batcher.close()


async def test_a_lone_request_is_served_after_the_queue_delay() -> None:
    fwd = Recorder()
    batcher = DynamicBatcher(fwd, max_batch_size=64, max_queue_delay_s=0.05, adaptive=False)
    batcher.start()
    np.testing.assert_array_equal(await batcher.submit(np.ones((1, 2), dtype=np.float32)), np.full((1, 2), 2.0))
    assert fwd.batches == [1]
    await batcher.close()


async def test_requests_arriving_within_the_delay_join_the_batch() -> None:
    fwd = Recorder()
    batcher = DynamicBatcher(fwd, max_batch_size=64, max_queue_delay_s=30.0, adaptive=False)
    batcher.start()
    first = batcher.submit(np.zeros((2, 1), dtype=np.float32))
    await asyncio.sleep(0)  # the worker takes the first and waits for company
    rest = [batcher.submit(np.full((2, 1), i, dtype=np.float32)) for i in range(31)]  # 64 rows in all: full
    await asyncio.gather(first, *rest)
    assert fwd.batches == [64]
    await batcher.close()


async def test_a_waiting_batch_goes_when_the_queue_would_fill_it_not_before() -> None:
    fwd = Recorder()
    # A delay no test could sit out: finishing at all shows each batch went because it was full.
    batcher = DynamicBatcher(fwd, max_batch_size=8, max_queue_delay_s=3600.0, adaptive=False)
    batcher.start()

    def rows(n: int, value: float) -> np.ndarray:
        return np.full((n, 1), value, dtype=np.float32)

    first = batcher.submit(rows(2, 1))
    await asyncio.sleep(0)  # the worker takes the first and waits for company
    second = batcher.submit(rows(3, 2))  # 5 rows: not full, the batch keeps waiting
    await asyncio.sleep(0.01)
    assert fwd.batches == [] and not first.done()
    third = batcher.submit(rows(4, 3))  # 9 rows would not fit: the 5 go now, the 4 start the next batch
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    fourth = batcher.submit(rows(4, 4))  # fills the next batch
    results = await asyncio.wait_for(asyncio.gather(third, fourth), 10)
    assert fwd.batches == [5, 8]
    np.testing.assert_array_equal(results[0], rows(4, 6))
    np.testing.assert_array_equal(results[1], rows(4, 8))
    await batcher.close()


async def test_adaptive_skips_the_delay_for_a_sequential_client_but_batches_bursts() -> None:
    fwd = Recorder()
    # A delay no test could sit out: sequential calls finishing at all shows they did not wait for it.
    batcher = DynamicBatcher(fwd, max_batch_size=64, max_queue_delay_s=3600.0, adaptive=True)
    batcher.start()
    for _ in range(5):
        await asyncio.wait_for(batcher.submit(np.ones((1, 2), dtype=np.float32)), 60)
    # A burst: every request is queued before the worker runs, so one batch takes them all.
    await asyncio.gather(*(batcher.submit(np.ones((1, 2), dtype=np.float32)) for _ in range(20)))
    assert fwd.batches == [1, 1, 1, 1, 1, 20]
    await batcher.close()


async def test_a_full_queue_refuses_at_once_and_recovers() -> None:
    gate, started = threading.Event(), threading.Event()

    def slow(rows: np.ndarray) -> np.ndarray:
        started.set()
        gate.wait(30)
        return rows

    batcher = DynamicBatcher(slow, max_batch_size=4, max_queue_delay_s=0.0, max_queue_rows=6,
                             labels=("full", "1"))
    batcher.start()
    running = batcher.submit(np.ones((4, 1), dtype=np.float32))
    await asyncio.to_thread(started.wait, 30)  # the first batch is in the forward pass, no longer queued
    queued = [batcher.submit(np.ones((3, 1), dtype=np.float32)) for _ in range(2)]  # 6 rows: the limit
    assert batcher.queued_rows == 6 and batcher.in_flight == 3
    with pytest.raises(ResourceExhausted, match=r"queue .* is full"):
        batcher.submit(np.ones((1, 1), dtype=np.float32))
    assert metrics.REFUSED.labels("full", "1")._value.get() == 1
    gauges = {(s.name, s.labels["model"]): s.value for f in REGISTRY.collect() for s in f.samples
              if s.labels.get("model") == "full"}
    assert gauges[("mlops_inference_queue_rows", "full")] == 6
    assert gauges[("mlops_inference_requests_in_flight", "full")] == 3
    gate.set()
    await asyncio.gather(running, *queued)
    assert (await batcher.submit(np.ones((1, 1), dtype=np.float32))).shape == (1, 1)
    await batcher.close()


async def test_forward_errors_reach_every_caller_of_the_batch() -> None:
    batcher = DynamicBatcher(Recorder(fail=True), max_batch_size=64, max_queue_delay_s=0.01)
    batcher.start()
    results = await asyncio.gather(
        *(batcher.submit(np.ones((1, 1), dtype=np.float32)) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    await batcher.close()


async def test_close_finishes_queued_work_then_refuses() -> None:
    fwd = Recorder()
    batcher = DynamicBatcher(fwd, max_batch_size=2, max_queue_delay_s=0.0)
    batcher.start()
    pending = [asyncio.ensure_future(batcher.submit(np.ones((1, 1), dtype=np.float32))) for _ in range(5)]
    await asyncio.sleep(0)
    await batcher.close()
    assert all(p.done() and not p.exception() for p in pending)
    with pytest.raises(Unavailable):
        await batcher.submit(np.ones((1, 1), dtype=np.float32))


async def test_inline_forward_gives_the_same_answers_without_a_thread() -> None:
    threads: set[str] = set()

    def forward(rows: np.ndarray) -> np.ndarray:
        threads.add(threading.current_thread().name)
        return rows * 2.0

    batcher = DynamicBatcher(forward, max_batch_size=8, max_queue_delay_s=0.001, inline=True)
    batcher.start()
    inputs = [np.full((i % 3 + 1, 2), i, dtype=np.float32) for i in range(12)]
    results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, x * 2.0)
    assert threads == {threading.current_thread().name}
    await batcher.close()


async def test_auto_executor_runs_short_passes_inline_and_long_ones_on_the_thread() -> None:
    """``auto``: the first pass goes to the thread (nothing measured yet); short passes then run on the
    event loop's thread; once passes take longer than the limit they go back to the forward thread."""
    threads: list[str] = []
    delay = {"s": 0.0}

    def forward(rows: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        time.sleep(delay["s"])
        return rows + 1.0

    # A limit far above a short pass (~10 us) and far below a long one, so the machine's load cannot blur them.
    batcher = DynamicBatcher(forward, max_batch_size=4, max_queue_delay_s=0.0, auto_inline_max_s=0.02,
                             labels=("auto", "1"))
    batcher.start()
    loop_thread = threading.current_thread().name
    for i in range(5):
        out = await batcher.submit(np.full((1, 2), i, dtype=np.float32))
        np.testing.assert_array_equal(out, np.full((1, 2), i + 1, dtype=np.float32))
    assert threads[0].startswith("forward-auto:1")
    assert set(threads[1:]) == {loop_thread}

    delay["s"] = 0.1  # five times the limit: the moving average crosses it within a few passes
    threads.clear()
    for _ in range(10):
        await batcher.submit(np.ones((1, 2), dtype=np.float32))
    assert threads[0] == loop_thread
    assert threads[-1].startswith("forward-auto:1")
    await batcher.close()
