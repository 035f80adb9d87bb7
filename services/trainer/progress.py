"""Where each epoch goes: the job's progress in Redis (throttled) and the metric points to the registry run
(batched, sent every ``flush_s`` and at the end). Called from the training thread or, for data-parallel
jobs, from the event loop reading rank 0's output.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from typing import Protocol

log = logging.getLogger(__name__)

# Where each phase ends on the job's 0..1 progress scale.
BUILT, READ, TRAINED, GATED = 0.05, 0.1, 0.85, 0.95


class JobCancelled(Exception):
    """The service is stopping; the job is picked up again at the next start."""


class ProgressStore(Protocol):
    async def progress(self, job_id: str, fraction: float) -> None: ...


class MetricLog(Protocol):
    async def log_metrics(self, run_id: str, points: list[dict[str, float]]) -> None: ...


def _log_failure(fut: Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("progress update failed: %r", fut.exception())


class EpochSink:
    """Callable ``(epoch, epochs, points)``; thread-safe."""

    def __init__(self, loop: asyncio.AbstractEventLoop, jobs: ProgressStore, job_id: str, tracker: MetricLog,
                 run_id: str, *, flush_s: float = 0.5, log_metrics: bool = True) -> None:
        self._loop, self._jobs, self._job_id = loop, jobs, job_id
        self._tracker, self.run_id = tracker, run_id
        self._flush_s = flush_s
        self._log_metrics = log_metrics
        self._pending: list[dict[str, float]] = []
        self._lock = threading.Lock()
        self._last = 0.0
        self.cancelled = threading.Event()
        self.epochs_seen = 0

    def __call__(self, epoch: int, epochs: int, points: list[dict[str, float]]) -> None:
        if self.cancelled.is_set():
            raise JobCancelled
        with self._lock:
            self.epochs_seen = epoch
            if self._log_metrics:
                self._pending.extend(points)
        fraction = epoch / max(epochs, 1)
        now = time.monotonic()
        if fraction < 1.0 and now - self._last < 0.25:
            return
        self._last = now
        value = READ + (TRAINED - READ) * fraction
        fut: Future[None] = asyncio.run_coroutine_threadsafe(self._jobs.progress(self._job_id, value), self._loop)
        fut.add_done_callback(_log_failure)

    async def flush(self) -> int:
        """Send what is pending; on failure the points stay for the next attempt and the error is raised."""
        with self._lock:
            points, self._pending = self._pending, []
        if not points:
            return 0
        try:
            await self._tracker.log_metrics(self.run_id, points)
        except BaseException:
            with self._lock:
                self._pending = points + self._pending
            raise
        return len(points)

    async def flush_loop(self) -> None:
        """Background task while training: a failed send is logged and retried at the next tick."""
        while True:
            await asyncio.sleep(self._flush_s)
            try:
                await self.flush()
            except Exception as exc:
                log.warning("sending epoch metrics to the registry failed (retrying): %r", exc)
