"""A dynamic batcher for one loaded model version.

Requests (each ``[n, ...]`` rows) wait in an asyncio queue; one worker takes the first, then keeps
adding queued requests until the batch holds ``max_batch_size`` rows or ``max_queue_delay_s`` has
passed since it took the first, concatenates them, runs the forward pass in a thread (so the event loop
keeps accepting requests meanwhile, and the next batch fills while this one computes), and splits the
result rows back to each caller. A request larger than ``max_batch_size`` runs as its own batch.

With ``adaptive`` on, the batcher only waits for more requests when the previous batch merged more
than one: a lone sequential client then pays no queue delay, while under concurrent load (where
waiting is what fills batches) it waits up to ``max_queue_delay_s`` as configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mlops.errors import Unavailable
from services.inference import metrics

log = logging.getLogger(__name__)

Forward = Callable[[np.ndarray], np.ndarray]


@dataclass(slots=True)
class _Item:
    rows: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.perf_counter)


def split_rows(output: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Cut ``output`` (rows of every request, concatenated) back into one array per request."""
    if output.shape[0] != sum(counts):
        raise RuntimeError(f"model returned {output.shape[0]} rows for a batch of {sum(counts)}")
    offsets = np.cumsum(counts)[:-1]
    return np.split(output, offsets) if len(counts) > 1 else [output]


class DynamicBatcher:
    """Batches calls to ``forward`` for one model version. Start it with :meth:`start`; stop with :meth:`close`."""

    def __init__(
        self,
        forward: Forward,
        *,
        max_batch_size: int = 64,
        max_queue_delay_s: float = 0.002,
        adaptive: bool = True,
        labels: tuple[str, str] = ("", ""),
    ) -> None:
        self._forward = forward
        self.max_batch_size = max(1, max_batch_size)
        self.max_queue_delay_s = max(0.0, max_queue_delay_s)
        self.adaptive = adaptive
        self._last_batch_requests = 0
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._carry: _Item | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._queue_time = metrics.QUEUE_SECONDS.labels(*labels)
        self._compute_time = metrics.COMPUTE_SECONDS.labels(*labels)
        self._batch_rows = metrics.BATCH_ROWS.labels(*labels)
        self._batch_requests = metrics.BATCH_REQUESTS.labels(*labels)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="inference-batcher")

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        """The forward pass's output rows for ``rows`` (``[n, ...]``), computed in some batch."""
        if self._closed:
            raise Unavailable("model version is being unloaded; retry")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(rows, future))
        return await future

    async def close(self) -> None:
        """Stop taking requests, finish the ones already queued, then stop the worker."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        if self._worker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if batch is None:
                return
            await self._execute(batch)

    async def _next(self, wait_s: float | None) -> _Item | None:
        """The next queued item (the carried-over one first); ``None`` on close; raises TimeoutError."""
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        if wait_s is None:
            return await self._queue.get()
        if wait_s <= 0:
            raise TimeoutError
        return await asyncio.wait_for(self._queue.get(), wait_s)

    async def _collect(self) -> list[_Item] | None:
        first = await self._next(None)
        if first is None:
            return None
        batch = [first]
        rows = first.rows.shape[0]
        wait = self.max_queue_delay_s
        if self.adaptive and self._last_batch_requests <= 1:
            wait = 0.0
        deadline = time.perf_counter() + wait
        while rows < self.max_batch_size:
            try:
                item = await self._next(deadline - time.perf_counter())
            except TimeoutError:
                break
            if item is None:
                # Closing: serve what we have, then stop at the next collect.
                self._queue.put_nowait(None)
                break
            if rows + item.rows.shape[0] > self.max_batch_size:
                self._carry = item
                break
            batch.append(item)
            rows += item.rows.shape[0]
        self._last_batch_requests = len(batch)
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        now = time.perf_counter()
        for item in batch:
            self._queue_time.observe(now - item.enqueued)
        counts = [item.rows.shape[0] for item in batch]
        try:
            inputs = batch[0].rows if len(batch) == 1 else np.concatenate([i.rows for i in batch], axis=0)
            start = time.perf_counter()
            output = await asyncio.to_thread(self._forward, inputs)
            self._compute_time.observe(time.perf_counter() - start)
            self._batch_rows.observe(sum(counts))
            self._batch_requests.observe(len(batch))
            parts = split_rows(output, counts)
        except Exception as exc:
            log.exception("forward pass failed for a batch of %d rows", sum(counts))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        for item, part in zip(batch, parts, strict=True):
            if not item.future.done():
                item.future.set_result(part)
