"""The trainer's logic: accept jobs (idempotently), run them one after another, record their state.

A job resolves its plan (filling an empty stream/features/label from the production version's lineage),
builds a point-in-time dataset in the feature service, starts a run in the registry with everything it
captured (code version and diff hash, Python, packages, dataset, seed, hardware), trains in a worker thread
(or data-parallel under torchrun) while every epoch's metrics go to the run, then puts the model through
the gates. A model that fails a gate leaves its run failed with the reason and no version; one that
passes is registered (TorchScript, signature, reference distributions) in the requested stage. A production
stage also needs no gate skipped for want of what it needed (:mod:`mlops.gate_policy`), unless forced.

Jobs left queued or running by a stopped process are picked up again at start; the run and the
registration carry the job id as idempotency keys, so a job that is run twice still makes one version.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlops import gate_policy
from mlops.auth.guard import current_principal
from mlops.auth.policy import STAGE_PERMISSION, allowed
from mlops.errors import InvalidArgument, NotFound
from mlops.modelguard import ModelPolicy, default_policy
from mlops.modelguard.refusal import ArtifactRefused, ArtifactUnreadable
from mlops.stages import PRODUCTION
from mlops.v1 import feature_pb2, registry_pb2
from services.trainer import distributed, envinfo, gates, reference
from services.trainer.clients import PeerError
from services.trainer.dataset import DatasetError, TrainingData, from_parquet
from services.trainer.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED, UNFINISHED, Job, JobSpec, JobStore, validate_spec
from services.trainer.plan import Plan, PlanError, make_plan
from services.trainer.progress import BUILT, GATED, READ, TRAINED, EpochSink, JobCancelled
from services.trainer.settings import TrainerSettings
from services.trainer.training import TrainConfig, TrainResult, World, describe_hardware, pick_device, train

log = logging.getLogger(__name__)

#: Run tag that binds a registration to the run started over REST (the registry takes it out of the tags):
#: RegisterModelVersionRequest has no run id field yet. The registry defines the same name.
RUN_ID_TAG = "mlops.run_id"


class Features(Protocol):
    async def build_dataset(
        self, stream: str, features: list[str], label: str, last_n: int = 0
    ) -> feature_pb2.DatasetVersion: ...
    async def get_dataset(self, dataset_id: str) -> feature_pb2.DatasetVersion: ...
    async def read_dataset(self, dataset_id: str) -> bytes: ...


class Registrar(Protocol):
    async def register(
        self, request: registry_pb2.RegisterModelVersionRequest, on_behalf_of: str = ""
    ) -> registry_pb2.ModelVersion: ...
    async def resolve_alias(self, model: str, alias: str) -> registry_pb2.ModelVersion | None: ...
    async def artifact(self, version: registry_pb2.ModelVersion) -> bytes: ...


class Tracker(Protocol):
    async def start(self, run: dict[str, Any]) -> dict[str, Any]: ...
    async def log_metrics(self, run_id: str, points: list[dict[str, float]]) -> None: ...
    async def update(self, run_id: str, **fields: Any) -> dict[str, Any]: ...
    async def get(self, run_id: str) -> dict[str, Any]: ...
    async def put_file(self, run_id: str, name: str, data: bytes) -> dict[str, Any]: ...


class GateFailed(Exception):
    """The model did not pass a gate: the run is failed with the reason and nothing is registered."""


class Trainer:
    def __init__(
        self,
        jobs: JobStore,
        features: Features,
        registry: Registrar,
        tracker: Tracker,
        settings: TrainerSettings | None = None,
        models: ModelPolicy | None = None,
        registers_as: str | None = None,
    ) -> None:
        self.jobs = jobs
        self._features = features
        self._registry = registry
        self._tracker = tracker
        self.settings = settings or TrainerSettings()
        #: What a model artifact may run: the gates load production's and the candidate's through it.
        self._models = models or default_policy()
        #: The role of the trainer's own token when auth is on (None: auth off, every stage): a job asking
        #: for a stage that role may not register at is refused when submitted, not after it has trained.
        self._registers_as = registers_as
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._stopping = asyncio.Event()

    # -- accepting work -------------------------------------------------------------------------------
    def checked(self, spec: JobSpec) -> JobSpec:
        s = self.settings
        return validate_spec(spec, default_epochs=s.default_epochs, max_epochs=s.max_epochs,
                             max_processes=s.max_processes)

    async def submit(self, spec: JobSpec, *, request_id: str = "", event_id: str = "") -> Job:
        """Queue a job for ``spec``; a request id (or event id) seen before returns that request's job. The
        caller's token id (REST and gRPC; none from ``training.requests``) goes with the job: the version is
        registered on their behalf."""
        principal = current_principal.get()
        spec = self.checked(dataclasses.replace(spec, requested_by=principal.token_id if principal else ""))
        self._check_reachable(spec.stage)
        job, created = await self.jobs.create(spec, request_id=request_id, event_id=event_id)
        if created:
            self._enqueue(job.id)
        return job

    def _check_reachable(self, stage: str) -> None:
        """InvalidArgument when the trainer's own token could not register at ``stage`` (with least privilege
        it registers at candidate only: promoting the version is its requester's act, afterwards)."""
        if self._registers_as is None:
            return
        needed = STAGE_PERMISSION[stage]
        if needed is not None and not allowed(self._registers_as, needed):
            raise InvalidArgument(
                f"the trainer registers new versions at candidate (its role {self._registers_as!r} may not "
                f"{needed}); train at candidate, then move the version to {stage} with a stage change",
                field="stage")

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
        await self.jobs.update(job_id, state=RUNNING, progress=0.0, error="", started_at=time.time())
        run_id = ""
        sink: EpochSink | None = None
        try:
            plan = await make_plan(job.spec, self._registry, self._features, self._tracker,
                                   default_max_gap=self.settings.fairness_max_gap,
                                   default_processes=self.settings.processes)
            dataset = await self._features.build_dataset(plan.stream, plan.dataset_features, plan.label,
                                                         plan.recent_rows)
            await self.jobs.update(job_id, dataset_id=dataset.id, inherited_from=plan.inherited_from)
            await self.jobs.progress(job_id, BUILT)
            raw = await self._features.read_dataset(dataset.id)
            await self.jobs.progress(job_id, READ)
            record = await self._run_record(job, plan, dataset)
            run = await self._tracker.start(record)
            run_id = run["id"]
            await self.jobs.update(job_id, run_id=run_id)
            sink = EpochSink(asyncio.get_running_loop(), self.jobs, job_id, self._tracker, run_id,
                             flush_s=self.settings.metrics_flush_s, log_metrics=run.get("status") == "running")
            data, result = await self._train(raw, plan, job.spec, sink)
            await sink.flush()
            await self.jobs.progress(job_id, TRAINED)
            results = await self._gates(plan, data, result)
            await self.jobs.update(job_id, gates=[g.to_dict() for g in results], metrics=result.metrics)
            await self._tracker.update(run_id, metrics=result.metrics, gates=[g.to_dict() for g in results],
                                       tags={"mlops.duration_s": f"{result.duration_s:.3f}", "device": result.device,
                                             "onnx": result.onnx_note or "exported"})
            await self.jobs.progress(job_id, GATED)
            refused = gates.failed(results)
            if refused:
                raise GateFailed("; ".join(f"gate {g.name} failed: {g.reason}" for g in refused))
            self._check_production(job.spec, results)
            version = await self._register(job, plan, record, result, data, run_id)
            await self.jobs.update(job_id, state=SUCCEEDED, progress=1.0, version=version.version, error="",
                                   finished_at=time.time())
            log.info("job %s: registered %s version %s in %s (accuracy %.3f)", job_id, version.model,
                     version.version, version.stage, result.metrics["accuracy"])
        except (asyncio.CancelledError, JobCancelled):
            if sink is not None:
                sink.cancelled.set()
            raise
        except (GateFailed, DatasetError, PeerError, PlanError, distributed.DistributedError) as exc:
            await self._fail(job_id, run_id, str(exc))
        except Exception as exc:
            log.exception("training job %s failed", job_id)
            await self._fail(job_id, run_id, f"internal error: {exc!r}")
        return await self.jobs.get(job_id)

    async def _fail(self, job_id: str, run_id: str, message: str) -> None:
        log.warning("training job %s failed: %s", job_id, message)
        if run_id:
            try:
                await self._tracker.update(run_id, status="failed", reason=message)
            except PeerError as exc:  # the job's own record still says why
                log.warning("could not mark run %s failed: %s", run_id, exc)
        await self.jobs.update(job_id, state=FAILED, error=message, finished_at=time.time())

    @staticmethod
    def _check_production(spec: JobSpec, results: list[gates.Gate]) -> None:
        """A production stage needs every gate evaluated: one skipped for want of what it needed (the production
        version reads a feature this dataset lacks) blocks it unless the job was forced (with a reason, by a
        caller allowed to promote: the permission check on the job's stage). The registry checks again, and
        audits a forced registration."""
        if spec.stage != PRODUCTION or spec.force:
            return
        blockers = gate_policy.production_blockers(g.to_dict() for g in results)
        if blockers:
            raise GateFailed(gate_policy.refusal(f"{spec.model} (stage requested by job)", blockers))

    # -- the steps --------------------------------------------------------------------------------------
    async def _run_record(self, job: Job, plan: Plan, dataset: feature_pb2.DatasetVersion) -> dict[str, Any]:
        """What the run captures at its start."""
        code = await asyncio.to_thread(envinfo.code_version)
        freeze = await asyncio.to_thread(envinfo.pip_freeze)
        s, spec = self.settings, job.spec
        params = {
            "stream": plan.stream, "features": ",".join(plan.features), "label": plan.label,
            "recent_rows": str(plan.recent_rows), "epochs": str(spec.epochs), "seed": str(spec.seed),
            "hidden": str(s.hidden), "learning_rate": str(s.learning_rate), "batch_size": str(s.batch_size),
            "holdout_fraction": str(s.holdout_fraction), "clip": str(s.clip), "processes": str(plan.processes),
            "holdout_tolerance": str(s.holdout_tolerance), "fairness_metric": s.fairness_metric,
        }
        if plan.attribute:
            params.update(sensitive_attribute=plan.attribute, fairness_max_gap=str(plan.max_gap))
        if plan.inherited_from:
            params["inherited_from"] = plan.inherited_from
        tags = {"mlops.job_id": job.id, "mlops.request_id": job.request_id, "stage_requested": spec.stage}
        if spec.reason:
            tags["reason"] = spec.reason
        return {
            "experiment": spec.model, "key": job.id, "params": params, "tags": tags,
            "dataset_id": dataset.id, "definitions_hash": dataset.definitions_hash,
            "git_commit": code.commit, "git_dirty": code.dirty, "diff_sha256": code.diff_sha256,
            "python_version": envinfo.python_version(), "pip_freeze": freeze, "seed": spec.seed,
            "hardware": describe_hardware(pick_device(World(0, plan.processes)), World(0, plan.processes)),
        }

    def _config(self, spec: JobSpec) -> TrainConfig:
        s = self.settings
        return TrainConfig(epochs=spec.epochs, seed=spec.seed, hidden=s.hidden, learning_rate=s.learning_rate,
                           batch_size=s.batch_size, holdout_fraction=s.holdout_fraction, clip=s.clip)

    async def _train(self, raw: bytes, plan: Plan, spec: JobSpec, sink: EpochSink) -> tuple[TrainingData, TrainResult]:
        parse = (raw, plan.features, plan.label, self.settings.max_classes, plan.attribute)
        flusher = asyncio.create_task(sink.flush_loop())
        try:
            if plan.processes <= 1:
                data = await asyncio.to_thread(from_parquet, *parse)
                result = await asyncio.to_thread(train, data, self._config(spec), sink)
                return data, result
            data = await asyncio.to_thread(from_parquet, *parse)  # checked here first, and kept for the gates
            with tempfile.TemporaryDirectory(prefix="mlops-ddp-") as tmp:
                work = Path(tmp)
                distributed.write_job(work, raw, features=plan.features, label=plan.label,
                                      group_column=plan.attribute, max_classes=self.settings.max_classes,
                                      config=self._config(spec))
                return data, await distributed.launch(work, plan.processes, sink)
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher

    async def _gates(self, plan: Plan, data: TrainingData, result: TrainResult) -> list[gates.Gate]:
        s = self.settings
        hold = result.holdout_index
        y = data.y[hold]
        production_pred, skip = None, ""
        holdout: gates.Gate | None = None
        refused = ""
        prod = plan.production
        if prod is not None:  # none: the gate is not applicable (nothing to lose), which blocks nothing
            missing = [f for f in prod.signature.features if f not in plan.features]
            if missing:
                skip = f"production v{prod.version} takes feature(s) {', '.join(missing)} this dataset lacks"
            else:
                artifact = await self._registry.artifact(prod)
                columns = [plan.features.index(f) for f in prod.signature.features]
                x_prod = data.x[hold][:, columns]
                try:
                    production_module = await asyncio.to_thread(gates.load, artifact, self._models)
                except (ArtifactRefused, ArtifactUnreadable) as exc:
                    # Never run it to compare with; the job fails until someone archives that version.
                    refused = f"production v{prod.version}'s artifact is not run: {exc.message}"
                    holdout = gates.Gate(gates.HOLDOUT, False, refused, details={"production_version": prod.version})
                production_pred = None if refused else await asyncio.to_thread(
                    lambda: gates.predict(production_module, x_prod).argmax(axis=1))
        low = np.nan_to_num(np.nanmin(np.where(np.isfinite(data.x), data.x, np.nan), axis=0))
        high = np.nan_to_num(np.nanmax(np.where(np.isfinite(data.x), data.x, np.nan), axis=0))
        robustness = await asyncio.to_thread(gates.robustness_gate, result.artifact, low, high, len(result.classes),
                                             self._models)
        return [
            holdout or gates.holdout_gate(y, result.holdout_pred, production_pred,
                                          production_version=prod.version if prod else "",
                                          tolerance=s.holdout_tolerance, skip_reason=skip),
            gates.fairness_gate(y, result.holdout_pred, data.groups[hold] if data.groups is not None else None,
                                attribute=plan.attribute, max_gap=plan.max_gap, metric=s.fairness_metric,
                                min_group_rows=s.fairness_min_group_rows),
            robustness,
        ]

    async def _register(
        self, job: Job, plan: Plan, record: dict[str, Any], result: TrainResult, data: TrainingData, run_id: str
    ) -> registry_pb2.ModelVersion:
        if result.onnx is not None:
            await self._tracker.put_file(run_id, "model.onnx", result.onnx)
        ref = reference.build({f: data.x[:, i] for i, f in enumerate(plan.features)}, result.scores, data.rows)
        spec = job.spec
        request = registry_pb2.RegisterModelVersionRequest(
            model=spec.model,
            run=registry_pb2.RunInfo(
                experiment=spec.model,
                params=result.params,
                metrics=result.metrics,
                tags={RUN_ID_TAG: run_id},
                dataset_id=record["dataset_id"],
                git_commit=record["git_commit"],
                git_dirty=record["git_dirty"],
                diff_sha256=record["diff_sha256"],
                python_version=record["python_version"],
                seed=spec.seed,
                hardware=result.hardware,
            ),
            artifact=result.artifact,
            artifact_format="torchscript",
            signature=registry_pb2.ModelSignature(
                features=plan.features, input_name="input", output_name="output", classes=result.classes
            ),
            stage=spec.stage,
            reason=spec.reason or f"trained by job {job.id}",
            reference=reference.dumps(ref),
            idempotency_key=job.id,
            force=spec.force,
        )
        return await self._registry.register(request, on_behalf_of=spec.requested_by)
