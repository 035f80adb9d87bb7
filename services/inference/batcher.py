"""A dynamic batcher for one loaded model version.

Requests (each ``[n, ...]`` rows) wait in a bounded queue; one worker task takes the first, then keeps
adding queued requests until the batch holds ``max_batch_size`` rows or ``max_queue_delay_s`` has
passed since the first was queued, concatenates them, runs the forward pass on the batcher's own
thread (so the event loop keeps decoding requests meanwhile, and the next batch fills while this one
computes), and splits the result rows back to each caller. A request larger than ``max_batch_size`` runs
as its own batch. Beyond ``max_queue_rows`` queued rows a request is refused at once
(:class:`ResourceExhausted`: gRPC RESOURCE_EXHAUSTED, HTTP 429), so memory stays bounded under overload.

With ``adaptive`` on, the batcher only waits for more requests when the previous batch merged more
than one: a lone sequential client then pays no queue delay, while under concurrent load (where
waiting is what fills batches) it waits up to ``max_queue_delay_s`` as configured.

Where the forward pass runs: ``inline`` (on the event loop), on the version's own ``thread``, or ``auto``:
inline while the recent passes (a moving average of their compute time) stay under ``inline_max_s``,
on the thread otherwise. Handing a pass to a thread and back costs tens of microseconds of CPU and a
GIL hand-off, more than a small CPU model's whole pass; a long pass inline would stall every other
request on the event loop, so those go to the thread. The first passes of a version run on the thread
until the average is known.

The per-request path is kept to a deque append and a future: ``submit`` is a plain function returning
the future (no coroutine frame), and the timer exists only while a batch is waiting for company. While a
batch waits, arrivals do not wake the worker: it wakes once, when the queued rows would fill the batch or
when the wait is over, and takes them all then (a wake-up per arrival cost ~5 us of event-loop time per
request at concurrency 64).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from mlops.errors import MlopsError, Unavailable
from services.inference import metrics

log = logging.getLogger(__name__)

Forward = Callable[[np.ndarray], np.ndarray]

#: every started batcher, for the in-flight and queue-depth gauges (read at scrape time, free per request).
LIVE: weakref.WeakSet[DynamicBatcher] = weakref.WeakSet()


class ResourceExhausted(MlopsError):
    """The queue is full: retry later (gRPC RESOURCE_EXHAUSTED, HTTP 429)."""

    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    code = "resource_exhausted"


class _Item:
    __slots__ = ("enqueued", "future", "rows")

    def __init__(self, rows: np.ndarray, future: asyncio.Future[np.ndarray]) -> None:
        self.rows = rows
        self.future = future
        self.enqueued = time.perf_counter()


def split_rows(output: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Cut ``output`` (rows of every request, concatenated) back into one array per request."""
    if output.shape[0] != sum(counts):
        raise RuntimeError(f"model returned {output.shape[0]} rows for a batch of {sum(counts)}")
    if len(counts) == 1:
        return [output]
    parts = []
    start = 0
    for n in counts:
        parts.append(output[start : start + n])
        start += n
    return parts


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class DynamicBatcher:
    """Batches calls to ``forward`` for one model version. Start it with :meth:`start`; stop with :meth:`close`."""

    def __init__(
        self,
        forward: Forward,
        *,
        max_batch_size: int = 64,
        max_queue_delay_s: float = 0.002,
        adaptive: bool = True,
        max_queue_rows: int = 65536,
        inline: bool = False,
        auto_inline_max_s: float | None = None,
        labels: tuple[str, str] = ("", ""),
    ) -> None:
        self._forward = forward
        self.inline = inline
        #: ``auto``: passes averaging under this many seconds run inline (None: off).
        self.auto_inline_max_s = None if inline else auto_inline_max_s
        self._compute_ewma_s: float | None = None
        self.max_batch_size = max(1, max_batch_size)
        self.max_queue_delay_s = max(0.0, max_queue_delay_s)
        self.adaptive = adaptive
        self.max_queue_rows = max(1, max_queue_rows)
        self.labels = labels
        self._pending: deque[_Item] = deque()
        self.queued_rows = 0
        self.executing = 0
        self._last_batch_requests = 0
        self._wakeup: asyncio.Future[None] | None = None
        #: rows of the batch waiting for company (None: no batch is waiting): arrivals wake the worker only
        #: once they would fill it.
        self._waiting_rows: int | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._queue_time = metrics.QUEUE_SECONDS.labels(*labels)
        self._compute_time = metrics.COMPUTE_SECONDS.labels(*labels)
        self._batch_rows = metrics.BATCH_ROWS.labels(*labels)
        self._batch_requests = metrics.BATCH_REQUESTS.labels(*labels)
        self._refused = metrics.REFUSED.labels(*labels)

    @property
    def in_flight(self) -> int:
        """Requests queued or in the forward pass now."""
        return len(self._pending) + self.executing

    def start(self) -> None:
        if self._worker is None:
            # One thread per version: forward passes of one version run in order, off the event loop.
            if not self.inline:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"forward-{self.labels[0]}:{self.labels[1]}")
            self._worker = asyncio.create_task(self._run(), name=f"batcher-{self.labels[0]}:{self.labels[1]}")
            LIVE.add(self)

    def submit(self, rows: np.ndarray) -> asyncio.Future[np.ndarray]:
        """A future of the forward pass's output rows for ``rows`` (``[n, ...]``), computed in some batch.

        Raises at once (no await needed) when the version is closing or the queue is full."""
        if self._closed:
            raise Unavailable("model version is being unloaded; retry")
        n = rows.shape[0]
        if self.queued_rows and self.queued_rows + n > self.max_queue_rows:
            self._refused.inc()
            raise ResourceExhausted(
                f"inference queue of model '{self.labels[0]}' version '{self.labels[1]}' is full "
                f"({self.queued_rows} rows waiting, limit {self.max_queue_rows}); retry later"
            )
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(rows, future))
        self.queued_rows += n
        if self._wakeup is not None:
            waiting = self._waiting_rows
            if waiting is None or waiting + self.queued_rows >= self.max_batch_size:
                _wake(self._wakeup)
        return future

    async def close(self) -> None:
        """Stop taking requests, finish the ones already queued, then stop the worker and its thread."""
        if self._closed:
            return
        self._closed = True
        if self._wakeup is not None:
            _wake(self._wakeup)
        if self._worker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        LIVE.discard(self)

    # -- the worker ----------------------------------------------------------------------------------
    async def _sleep(self, seconds: float | None) -> None:
        """Until a request is queued (or close), or ``seconds`` pass."""
        loop = asyncio.get_running_loop()
        self._wakeup = loop.create_future()
        handle = loop.call_later(seconds, _wake, self._wakeup) if seconds is not None else None
        try:
            await self._wakeup
        finally:
            self._wakeup = None
            if handle is not None:
                handle.cancel()

    def _take(self, batch: list[_Item], rows: int) -> int:
        """Move queued requests into ``batch`` while they fit; returns the batch's rows."""
        pending = self._pending
        while pending:
            n = pending[0].rows.shape[0]
            if batch and rows + n > self.max_batch_size:
                break
            item = pending.popleft()
            self.queued_rows -= n
            batch.append(item)
            rows += n
            if rows >= self.max_batch_size:
                break
        return rows

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closed:
                    return
                await self._sleep(None)
                continue
            batch: list[_Item] = []
            rows = self._take(batch, 0)
            wait = self.max_queue_delay_s
            if self.adaptive and self._last_batch_requests <= 1:
                wait = 0.0
            if wait > 0.0 and rows < self.max_batch_size and not self._pending and not self._closed:
                remaining = batch[0].enqueued + wait - time.perf_counter()
                if remaining > 0:
                    self._waiting_rows = rows
                    try:
                        await self._sleep(remaining)
                    finally:
                        self._waiting_rows = None
                    rows = self._take(batch, rows)
            self._last_batch_requests = len(batch)
            await self._execute(batch, rows)

    def _run_inline(self) -> bool:
        if self.inline:
            return True
        limit, average = self.auto_inline_max_s, self._compute_ewma_s
        return limit is not None and average is not None and average < limit

    def _observe_compute(self, seconds: float) -> None:
        average = self._compute_ewma_s
        self._compute_ewma_s = seconds if average is None else average + 0.1 * (seconds - average)

    def _timed_forward(self, inputs: np.ndarray) -> tuple[np.ndarray, float]:
        """The forward pass and how long it took, measured where it runs."""
        started = time.perf_counter()
        output = self._forward(inputs)
        return output, time.perf_counter() - started

    async def _execute(self, batch: list[_Item], rows: int) -> None:
        now = time.perf_counter()
        observe_queue = self._queue_time.observe
        for item in batch:
            observe_queue(now - item.enqueued)
        self.executing = len(batch)
        try:
            inputs = batch[0].rows if len(batch) == 1 else np.concatenate([i.rows for i in batch], axis=0)
            if self._run_inline():
                output, compute_s = self._timed_forward(inputs)
            else:
                output, compute_s = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._timed_forward, inputs)
            # The forward pass alone decides where the next one runs, never the hand-off to the thread
            # and back: on a busy machine that wait alone passed the inline limit and kept short passes off
            # the event loop.
            self._observe_compute(compute_s)
            self._compute_time.observe(time.perf_counter() - now)
            self._batch_rows.observe(rows)
            self._batch_requests.observe(len(batch))
            parts = split_rows(output, [item.rows.shape[0] for item in batch])
        except Exception as exc:
            log.exception("forward pass failed for a batch of %d rows", rows)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        finally:
            self.executing = 0
        for item, part in zip(batch, parts, strict=True):
            if not item.future.done():
                item.future.set_result(part)


metrics.register_batcher_gauges(lambda: LIVE)
