"""The trainer's logic: accept jobs (idempotently), run them one after another, record their state.

A job builds a point-in-time dataset in the feature service, reads its Parquet bytes, trains in a worker
thread (the event loop keeps serving), and registers the TorchScript artifact with its run in the registry.
Jobs left queued or running by a stopped process are picked up again at start; the registration carries
the job id as an idempotency key, so a job that is run twice still makes one model version.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import Future
from typing import Protocol

from mlops.errors import NotFound
from mlops.v1 import feature_pb2, registry_pb2
from services.trainer import envinfo
from services.trainer.clients import PeerError
from services.trainer.dataset import DatasetError, from_parquet
from services.trainer.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED, UNFINISHED, Job, JobSpec, JobStore, validate_spec
from services.trainer.settings import TrainerSettings
from services.trainer.training import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)

# Run tags the registry understands (see services/registry/store.py); they belong in a shared module.
HISTORY_TAG = "mlops.metric_history"
IDEMPOTENCY_TAG = "mlops.idempotency_key"

# Where each phase ends on the job's 0..1 progress scale.
BUILT, READ, TRAINED = 0.05, 0.1, 0.9


class Features(Protocol):
    async def build_dataset(self, stream: str, features: list[str], label: str) -> feature_pb2.DatasetVersion: ...
    async def read_dataset(self, dataset_id: str) -> bytes: ...


class Registrar(Protocol):
    async def register(self, request: registry_pb2.RegisterModelVersionRequest) -> registry_pb2.ModelVersion: ...


class JobCancelled(Exception):
    """The service is stopping; the job is picked up again at the next start."""


def _log_failure(fut: Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("progress update failed: %r", fut.exception())


class _Progress:
    """Called by the training thread after each epoch; forwards (throttled) to Redis on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, jobs: JobStore, job_id: str) -> None:
        self._loop, self._jobs, self._job_id = loop, jobs, job_id
        self._last = 0.0
        self.cancelled = threading.Event()

    def __call__(self, fraction: float) -> None:
        if self.cancelled.is_set():
            raise JobCancelled
        now = time.monotonic()
        if fraction < 1.0 and now - self._last < 0.25:
            return
        self._last = now
        value = READ + (TRAINED - READ) * fraction
        fut: Future[None] = asyncio.run_coroutine_threadsafe(self._jobs.progress(self._job_id, value), self._loop)
        fut.add_done_callback(_log_failure)


class Trainer:
    def __init__(
        self, jobs: JobStore, features: Features, registry: Registrar, settings: TrainerSettings | None = None
    ) -> None:
        self.jobs = jobs
        self._features = features
        self._registry = registry
        self.settings = settings or TrainerSettings()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._stopping = asyncio.Event()

    # -- accepting work -------------------------------------------------------------------------------
    def checked(self, spec: JobSpec) -> JobSpec:
        return validate_spec(spec, default_epochs=self.settings.default_epochs, max_epochs=self.settings.max_epochs)

    async def submit(self, spec: JobSpec, *, request_id: str = "", event_id: str = "") -> Job:
        """Queue a job for ``spec``; a request id (or event id) seen before returns that request's job."""
        job, created = await self.jobs.create(self.checked(spec), request_id=request_id, event_id=event_id)
        if created:
            self._enqueue(job.id)
        return job

    async def get(self, job_id: str) -> Job:
        job = await self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no training job {job_id!r}", field="id")
        return job

    async def recent(self, limit: int = 50) -> list[Job]:
        return await self.jobs.recent(limit)

    def _enqueue(self, job_id: str) -> None:
        if job_id not in self._queued:
            self._queued.add(job_id)
            self._queue.put_nowait(job_id)

    # -- doing work -----------------------------------------------------------------------------------
    async def run_workers(self) -> None:
        """Background task: requeue what a previous process left, then run jobs as they come."""
        for job in await self.jobs.unfinished():
            log.info("resuming training job %s (%s)", job.id, job.state)
            await self.jobs.update(job.id, state=QUEUED)
            self._enqueue(job.id)
        workers = [asyncio.create_task(self._worker()) for _ in range(max(1, self.settings.concurrency))]
        try:
            await self._stopping.wait()
        finally:
            # A job cut short stays "running" in Redis and is resumed by the next process.
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def stop(self) -> None:
        """Stop taking jobs and cancel the one in progress (its thread stops at the next epoch)."""
        self._stopping.set()

    async def _worker(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                await self.run_job(job_id)
            finally:
                self._queued.discard(job_id)

    async def run_job(self, job_id: str) -> Job | None:
        job = await self.jobs.get(job_id)
        if job is None or job.state not in UNFINISHED:
            return job
        spec = job.spec
        await self.jobs.update(job_id, state=RUNNING, progress=0.0, error="", started_at=time.time())
        progress = _Progress(asyncio.get_running_loop(), self.jobs, job_id)
        try:
            dataset = await self._features.build_dataset(spec.stream, spec.features, spec.label)
            await self.jobs.update(job_id, dataset_id=dataset.id)
            await self.jobs.progress(job_id, BUILT)
            data = await self._features.read_dataset(dataset.id)
            await self.jobs.progress(job_id, READ)
            result = await asyncio.to_thread(self._fit, data, spec, progress)
            code = await asyncio.to_thread(envinfo.code_version)
            version = await self._registry.register(self._registration(job, dataset.id, result, code))
            await self.jobs.update(
                job_id,
                state=SUCCEEDED,
                progress=1.0,
                run_id=version.run_id,
                version=version.version,
                metrics=result.metrics,
                error="",
                finished_at=time.time(),
            )
            log.info(
                "job %s: registered %s version %s (accuracy %.3f)",
                job_id,
                version.model,
                version.version,
                result.metrics["accuracy"],
            )
        except asyncio.CancelledError:
            progress.cancelled.set()
            raise
        except (DatasetError, PeerError) as exc:
            await self._fail(job_id, str(exc))
        except Exception as exc:
            log.exception("training job %s failed", job_id)
            await self._fail(job_id, f"internal error: {exc!r}")
        return await self.jobs.get(job_id)

    async def _fail(self, job_id: str, message: str) -> None:
        log.warning("training job %s failed: %s", job_id, message)
        await self.jobs.update(job_id, state=FAILED, error=message, finished_at=time.time())

    def _fit(self, data: bytes, spec: JobSpec, progress: _Progress) -> TrainResult:
        s = self.settings
        table = from_parquet(data, spec.features, spec.label, s.max_classes)
        config = TrainConfig(
            epochs=spec.epochs,
            seed=spec.seed,
            hidden=s.hidden,
            learning_rate=s.learning_rate,
            batch_size=s.batch_size,
            holdout_fraction=s.holdout_fraction,
        )
        return train(table, config, progress)

    def _registration(
        self, job: Job, dataset_id: str, result: TrainResult, code: envinfo.CodeVersion
    ) -> registry_pb2.RegisterModelVersionRequest:
        spec = job.spec
        params = {
            **result.params,
            "stream": spec.stream,
            "features": ",".join(spec.features),
            "label": spec.label,
        }
        tags = {
            "mlops.job_id": job.id,
            "mlops.request_id": job.request_id,
            IDEMPOTENCY_TAG: job.id,
            HISTORY_TAG: json.dumps(result.history),
            "device": result.device,
        }
        if spec.reason:
            tags["reason"] = spec.reason
        return registry_pb2.RegisterModelVersionRequest(
            model=spec.model,
            run=registry_pb2.RunInfo(
                experiment=spec.model,
                params=params,
                metrics=result.metrics,
                tags=tags,
                dataset_id=dataset_id,
                git_commit=code.commit,
                git_dirty=code.dirty,
                python_version=envinfo.python_version(),
                seed=spec.seed,
                hardware=result.hardware,
            ),
            artifact=result.artifact,
            artifact_format="torchscript",
            signature=registry_pb2.ModelSignature(
                features=spec.features, input_name="input", output_name="output", classes=result.classes
            ),
            stage=spec.stage,
            reason=spec.reason or f"trained by job {job.id}",
        )
