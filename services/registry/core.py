"""The registry's async facade: runs the store off the event loop and publishes ``models.lifecycle``.

Every write commits its transitions first and publishes them after, from the transitions table
(an outbox): a publish that fails is retried by :meth:`Registry.outbox_loop`, with the same event_ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from mlops import gate_policy
from mlops.auth import audit
from mlops.auth.guard import current_principal
from mlops.bus import topics
from mlops.bus.producer import Producer
from mlops.modelguard import ModelPolicy, default_policy
from mlops.modelguard.refusal import ArtifactRefused, ArtifactUnreadable
from mlops.v1 import events_pb2
from services.registry.card import build_card, render_markdown
from services.registry.compare import compare
from services.registry.store import RegistryStore
from services.registry.views import (
    ExperimentView,
    GateResult,
    LifecycleEvent,
    MetricPoint,
    ModelSummary,
    ModelTransition,
    RegisterInput,
    RunInput,
    RunView,
    VersionView,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


def lifecycle_message(event: LifecycleEvent) -> events_pb2.ModelLifecycle:
    ts = Timestamp()
    ts.FromDatetime(event.time)
    return events_pb2.ModelLifecycle(
        action=event.action,
        model=event.model,
        version=event.version,
        stage=event.stage,
        previous_stage=event.previous_stage,
        artifact_sha256=event.artifact_sha256,
        reason=event.reason,
        actor=event.actor,
        time=ts,
    )


class Registry:
    """What the REST and gRPC adapters call."""

    def __init__(self, store: RegistryStore, producer: Producer | None, outbox_interval_s: float = 2.0,
                 models: ModelPolicy | None = None) -> None:
        self.store = store
        self._producer = producer
        #: What a model artifact may run; every registration is inspected against it before it is stored.
        self._models = models or default_policy()
        self._publish_lock = asyncio.Lock()
        self._outbox_interval_s = outbox_interval_s
        self._stopping = asyncio.Event()

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def database_ready(self) -> bool:
        return await asyncio.wait_for(self._run(self.store.ping), 2.0)

    # -- writes ----------------------------------------------------------------------------------------
    async def register(self, req: RegisterInput, *, on_behalf_of: str = "") -> VersionView:
        await self._run(self.store.check_request, req)  # the request's own faults first, then its code
        await self._inspect_artifact(req)
        view = await self._run(self.store.register, req)
        await self._audit_forced(view, req.reason, req.actor, on_behalf_of)
        await self._publish_quietly()
        return view

    async def _audit_forced(self, view: VersionView, reason: str, actor: str, on_behalf_of: str = "") -> None:
        """A production stage forced past blocking gates goes in the audit trail with its reason and the gates
        (beside the method's own record): the one place an operator looks for who overrode what, and why."""
        if not view.forced_past:
            return
        principal = current_principal.get()
        name = principal.name if principal is not None and principal.token_id else (actor or "anonymous")
        log.warning("%s v%s forced into production by %s past: %s (reason: %s)", view.model, view.version, name,
                    gate_policy.describe(view.forced_past), reason)
        await audit.record(self._producer, name, gate_policy.FORCED_ACTION, f"{view.model}/{view.version}",
                           f"{reason} [forced past: {gate_policy.describe(view.forced_past)}]",
                           actor_id=principal.token_id if principal else "", on_behalf_of=on_behalf_of)

    async def _inspect_artifact(self, req: RegisterInput) -> None:
        """A model artifact is code: refuse one that would run anything but pure tensor ops (in a subprocess: the
        registry never loads it), and put the refusal in the audit trail."""
        try:
            await self._run(self._models.check_artifact, req.artifact_format, req.artifact)
        except (ArtifactRefused, ArtifactUnreadable) as exc:
            principal = current_principal.get()
            try:
                await audit.record(self._producer, principal.name if principal else (req.actor or "anonymous"),
                                   "artifact.refused", req.model or "?", exc.message,
                                   actor_id=principal.token_id if principal else "")
            except Exception:
                log.exception("auditing a refused artifact failed")
            log.warning("refused the artifact of %r from %s: %s", req.model, req.actor, exc.message)
            raise

    async def set_stage(self, model: str, version: str, stage: str, *, reason: str, actor: str,
                        force: bool = False) -> VersionView:
        view = await self._run(self.store.set_stage, model, version, stage, reason=reason, actor=actor, force=force)
        await self._audit_forced(view, reason, actor)
        await self._publish_quietly()
        return view

    async def rollback(self, model: str, *, reason: str, actor: str) -> VersionView:
        view = await self._run(self.store.rollback, model, reason=reason, actor=actor)
        await self._publish_quietly()
        return view

    # -- experiment tracking ---------------------------------------------------------------------------
    async def start_run(self, run: RunInput) -> RunView:
        return await self._run(self.store.runs.start, run)

    async def log_metrics(self, run_id: str, points: list[MetricPoint]) -> int:
        return await self._run(self.store.runs.log_metrics, run_id, points)

    async def update_run(
        self,
        run_id: str,
        *,
        status: str = "",
        reason: str | None = None,
        gates: list[GateResult] | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> RunView:
        return await self._run(self.store.runs.update, run_id, status=status, reason=reason, gates=gates,
                               params=params, tags=tags, metrics=metrics)

    async def put_run_file(self, run_id: str, name: str, data: bytes) -> dict[str, Any]:
        return await self._run(self.store.runs.put_file, run_id, name, data)

    async def read_run_file(self, run_id: str, name: str) -> tuple[dict[str, Any], bytes]:
        return await self._run(self.store.runs.read_file, run_id, name)

    async def compare_runs(self, run_ids: list[str]) -> dict[str, Any]:
        return compare([await self.get_run(r) for r in run_ids])

    # -- reads -----------------------------------------------------------------------------------------
    async def get_version(self, model: str, version: str) -> VersionView:
        return await self._run(self.store.get_version, model, version)

    async def list_versions(self, model: str = "", stages: list[str] | None = None) -> list[VersionView]:
        return await self._run(self.store.list_versions, model, stages)

    async def resolve_alias(self, model: str, alias: str) -> VersionView:
        return await self._run(self.store.resolve_alias, model, alias)

    async def list_models(self) -> list[ModelSummary]:
        return await self._run(self.store.list_models)

    async def recent_transitions(self, limit: int) -> list[ModelTransition]:
        return await self._run(self.store.recent_transitions, limit)

    async def get_model(self, name: str) -> ModelSummary:
        return await self._run(self.store.get_model, name)

    async def list_experiments(self) -> list[ExperimentView]:
        return await self._run(self.store.list_experiments)

    async def list_runs(self, experiment: str) -> list[RunView]:
        return await self._run(self.store.list_runs, experiment)

    async def get_run(self, run_id: str) -> RunView:
        return await self._run(self.store.get_run, run_id)

    async def artifact(self, model: str, version: str) -> tuple[VersionView, bytes]:
        """A version's artifact bytes, verified against its sha256 (a mismatch raises, nothing is served)."""
        return await self._run(self.store.read_artifact, model, version)

    async def reference(self, model: str, version: str) -> tuple[VersionView, bytes]:
        """A version's reference distributions (JSON bytes), verified against their sha256."""
        return await self._run(self.store.read_reference, model, version)

    async def lineage(self, model: str, version: str) -> dict[str, Any]:
        """version -> run -> dataset version -> feature definitions -> code commit."""
        view = await self.get_version(model, version)
        run = await self.get_run(view.run_id)
        return {"model": model, "version": view.version, "artifact_sha256": view.artifact_sha256,
                "reference_sha256": view.reference_sha256, **run.lineage(),
                "python_version": run.env.get("python_version", ""), "seed": run.env.get("seed", 0),
                "hardware": run.env.get("hardware", "")}

    async def card(self, model: str, version: str) -> dict[str, Any]:
        view = await self.get_version(model, version)
        run = await self.get_run(view.run_id) if view.run_id else None
        reference = None
        if view.reference_sha256:
            _, raw = await self.reference(model, version)
            reference = json.loads(raw)
        card = build_card(view, run, reference)
        return {**card, "markdown": render_markdown(card)}

    # -- lifecycle events ------------------------------------------------------------------------------
    async def publish_pending(self) -> int:
        """Send every unpublished lifecycle event, oldest first; returns how many went out."""
        if self._producer is None or not self._producer.started:
            return 0
        sent = 0
        async with self._publish_lock:
            while True:
                events = await self._run(self.store.pending_events)
                if not events:
                    return sent
                done: list[int] = []
                try:
                    for event in events:
                        await self._producer.send(
                            topics.MODELS_LIFECYCLE, lifecycle_message(event), key=event.model, event_id=event.event_id
                        )
                        done.append(event.seq)
                finally:
                    await self._run(self.store.mark_published, done)
                sent += len(done)

    async def _publish_quietly(self) -> None:
        try:
            await self.publish_pending()
        except Exception:
            log.exception("publishing lifecycle events failed; the outbox retries")

    async def outbox_loop(self) -> None:
        """Background task: publish whatever earlier attempts left behind."""
        while not self._stopping.is_set():
            await self._publish_quietly()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._outbox_interval_s)
        await self._publish_quietly()

    async def stop(self) -> None:
        self._stopping.set()
