"""The dynamic batcher: merging concurrent requests, splitting results back, limits and failures."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from mlops.errors import Unavailable
from services.inference.batcher import DynamicBatcher, split_rows


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


async def test_single_request_waits_at_most_the_queue_delay() -> None:
    batcher = DynamicBatcher(Recorder(), max_batch_size=64, max_queue_delay_s=0.05, adaptive=False)
    batcher.start()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await batcher.submit(np.ones((1, 2), dtype=np.float32))
    assert 0.04 < loop.time() - start < 1.0
    await batcher.close()


async def test_adaptive_skips_the_delay_for_a_sequential_client_but_batches_bursts() -> None:
    fwd = Recorder()
    batcher = DynamicBatcher(fwd, max_batch_size=64, max_queue_delay_s=0.2, adaptive=True)
    batcher.start()
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(5):
        await batcher.submit(np.ones((1, 2), dtype=np.float32))
    assert loop.time() - start < 0.2  # five sequential calls, none waited 0.2 s
    # A burst: the first batch (after singletons) goes at once, the rest then wait and merge.
    await asyncio.gather(*(batcher.submit(np.ones((1, 2), dtype=np.float32)) for _ in range(20)))
    assert fwd.batches[:5] == [1, 1, 1, 1, 1]
    assert sum(fwd.batches[5:]) == 20 and len(fwd.batches[5:]) <= 3
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
