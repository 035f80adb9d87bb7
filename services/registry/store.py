"""The registry's model versions and stages over its database and artifact store, synchronous (callers run
it off the event loop). Runs and experiments live in :mod:`services.registry.runs`, on the same database.

A version cannot exist without its run, and the run must name its dataset version, code version and
Python (lineage by construction); a run that failed (a gate) makes no version.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from mlops import gate_policy
from mlops.errors import Conflict, InvalidArgument, NotFound
from services.registry import stages as st
from services.registry.artifacts import ArtifactStore
from services.registry.db import (
    ModelVersionRow,
    RegisteredModel,
    Run,
    StageTransition,
    utcnow,
)
from services.registry.runs import FAILED, FINISHED, RunStore, check_name
from services.registry.session import Database
from services.registry.views import (
    ExperimentView,
    LifecycleEvent,
    ModelSummary,
    ModelTransition,
    RegisterInput,
    RunView,
    Signature,
    Transition,
    VersionView,
)

FORMATS = ("torchscript",)
#: Largest reference-distributions document accepted (the trainer's are a few hundred KB at most).
MAX_REFERENCE_BYTES = 32 * 1024 * 1024


def _signature(row: ModelVersionRow) -> Signature:
    d = json.loads(row.signature_json)
    return Signature(
        features=list(d.get("features", [])),
        input_name=d.get("input_name", "input"),
        output_name=d.get("output_name", "output"),
        classes=list(d.get("classes", [])),
    )


def _transition(t: StageTransition) -> Transition:
    return Transition(t.id, t.action, t.from_stage, t.to_stage, t.actor, t.reason, t.time)


def _version_view(row: ModelVersionRow, *, transitions: bool = False) -> VersionView:
    return VersionView(
        model=row.model.name,
        version=str(row.number),
        run_id=row.run_id,
        stage=row.stage,
        artifact_sha256=row.artifact_sha256,
        artifact_format=row.artifact_format,
        artifact_size=row.artifact_size,
        signature=_signature(row),
        created_at=row.created_at,
        stage_updated_at=row.stage_updated_at,
        dataset_id=row.run.dataset_id if row.run else "",
        transitions=[_transition(t) for t in row.transitions] if transitions else [],
        reference_sha256=row.reference_sha256 or "",
    )


def _version_number(version: str) -> int:
    text = (version or "").strip()
    # ASCII digits only ("²" is a digit to str.isdigit, not to int) and few enough for SQLite's 64-bit
    # integers (5,000 digits passed isdigit and failed int(): a 500).
    if not (text.isascii() and text.isdigit() and len(text) <= st.MAX_VERSION_DIGITS):
        raise NotFound(f"no version {version[:40]!r}", field="version")
    return int(text)


def check_reference(data: bytes) -> None:
    """The reference distributions must be a JSON object with ``rows`` and per-feature ``features``."""
    if len(data) > MAX_REFERENCE_BYTES:
        raise InvalidArgument(f"reference is over {MAX_REFERENCE_BYTES} bytes", field="reference")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"reference is not JSON: {exc}", field="reference") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("features"), dict) or "rows" not in doc:
        raise InvalidArgument('reference must be a JSON object with "rows" and "features"', field="reference")
    for name, dist in doc["features"].items():
        if not isinstance(dist, dict) or dist.get("kind") not in ("numeric", "categorical"):
            raise InvalidArgument(f"reference feature {name!r} needs kind numeric or categorical", field="reference")


def _check_force(force: bool, target: str) -> None:
    if force and target != st.PRODUCTION:
        raise InvalidArgument("force applies to a production stage only (no other stage is blocked by a gate)",
                              field="force")


def _forced_past(run: Run | None, target: str, *, force: bool, reason: str, what: str) -> list[dict[str, Any]]:
    """The gates of ``run`` a production stage is forced past (empty when none blocks it). A blocking gate
    refuses the change (Conflict, with the gates and why) unless forced with a reason: the caller already
    holds promote, which a production stage needs. Rules: :mod:`mlops.gate_policy`."""
    _check_force(force, target)
    if target != st.PRODUCTION:
        return []
    gates = json.loads(run.gates_json or "[]") if run is not None else []
    blockers = gate_policy.production_blockers(g for g in gates if isinstance(g, dict))
    if not blockers:
        return []
    if not force:
        raise Conflict(gate_policy.refusal(what, blockers), field="stage")
    if not reason.strip():
        raise InvalidArgument("force needs a reason: it is recorded in the audit trail", field="reason")
    return [dict(b) for b in blockers]


class _CheckedRegistration(NamedTuple):
    name: str
    stage: str
    artifact_format: str
    signature: dict[str, Any]
    experiment: str


class RegistryStore:
    """Model versions, stage transitions and artifacts; ``runs`` holds experiments and runs."""

    def __init__(self, url: str, artifacts: ArtifactStore) -> None:
        self.db = Database(url)
        self.engine = self.db.engine
        self.artifacts = artifacts
        self.runs = RunStore(self.db, artifacts)

    def close(self) -> None:
        self.db.close()

    def ping(self) -> bool:
        return self.db.ping()

    def _session(self):  # type: ignore[no-untyped-def]
        return self.db.session()

    # -- lookups ------------------------------------------------------------------------------------------
    @staticmethod
    def _model(session: Session, name: str) -> RegisteredModel:
        model = session.scalar(select(RegisteredModel).where(RegisteredModel.name == name))
        if model is None:
            raise NotFound(f"no model {name!r}", field="model")
        return model

    @classmethod
    def _version(cls, session: Session, name: str, version: str) -> ModelVersionRow:
        number = _version_number(version)
        model = cls._model(session, name)
        row = session.scalar(
            select(ModelVersionRow)
            .where(ModelVersionRow.model_id == model.id, ModelVersionRow.number == number)
            .options(selectinload(ModelVersionRow.transitions), selectinload(ModelVersionRow.run))
        )
        if row is None:
            raise NotFound(f"model {name!r} has no version {version!r}", field="version")
        return row

    @staticmethod
    def _stages(model: RegisteredModel) -> dict[int, str]:
        return {v.number: v.stage for v in model.versions}

    # -- registration -------------------------------------------------------------------------------------
    def _checked_signature(self, req: RegisterInput) -> dict[str, Any]:
        features = [f.strip() for f in req.signature.features]
        if not features or any(not f for f in features) or len(set(features)) != len(features):
            raise InvalidArgument("signature.features must be distinct, non-empty names", field="signature.features")
        return {
            "features": features,
            "input_name": req.signature.input_name or "input",
            "output_name": req.signature.output_name or "output",
            "classes": list(req.signature.classes),
        }

    def check_request(self, req: RegisterInput) -> _CheckedRegistration:
        """Everything about a registration that can be checked without the database or the artifact's
        contents; run first, so a malformed request is told what is wrong before its artifact is inspected."""
        name = check_name(req.model, "model")
        stage = st.normalize_stage(req.stage, default=st.CANDIDATE)
        _check_force(req.force, stage)
        if not req.artifact:
            raise InvalidArgument("artifact is empty", field="artifact")
        fmt = (req.artifact_format or "torchscript").strip().lower()
        if fmt not in FORMATS:
            raise InvalidArgument(
                f"unsupported artifact_format {req.artifact_format!r}; expected one of {', '.join(FORMATS)}",
                field="artifact_format",
            )
        signature = self._checked_signature(req)
        if req.reference:
            check_reference(req.reference)
        experiment_name = check_name(req.run.experiment or name, "run.experiment")
        if not req.run_id:  # a new run's lineage is all in the request (a named run's is in the database)
            self.runs.check_lineage(req.run)
        return _CheckedRegistration(name, stage, fmt, signature, experiment_name)

    def register(self, req: RegisterInput) -> VersionView:
        """Store the artifact (and reference), bind the version to its run, and add it in the requested stage."""
        name, stage, fmt, signature, experiment_name = self.check_request(req)
        sha = self.artifacts.put(req.artifact)
        reference_sha = self.artifacts.put(req.reference) if req.reference else ""

        def apply(session: Session) -> VersionView:
            now = utcnow()
            if req.idempotency_key:
                earlier = session.scalar(
                    select(ModelVersionRow)
                    .join(RegisteredModel)
                    .where(RegisteredModel.name == name, ModelVersionRow.idempotency_key == req.idempotency_key)
                )
                if earlier is not None:
                    return _version_view(earlier, transitions=True)
            run = self._run_for(session, req, experiment_name, now)
            forced = _forced_past(run, stage, force=req.force, reason=req.reason,
                                  what=f"a new version of {name} (run {run.id})")
            model = session.scalar(select(RegisteredModel).where(RegisteredModel.name == name))
            if model is None:
                model = RegisteredModel(name=name, created_at=now)
                session.add(model)
                session.flush()
            number = (
                session.scalar(select(func.max(ModelVersionRow.number)).where(ModelVersionRow.model_id == model.id))
                or 0
            ) + 1
            # Demote first, so the one-production index never sees two at once.
            existing = self._stages(model)
            demotions = st.plan_transition({**existing, number: ""}, number, stage)[:-1]
            self._apply_changes(session, model, demotions, reason=req.reason, actor=req.actor, now=now, cause=number)
            row = ModelVersionRow(
                model=model,
                number=number,
                run=run,
                stage=stage,
                artifact_sha256=sha,
                artifact_format=fmt,
                artifact_size=len(req.artifact),
                signature_json=json.dumps(signature),
                reference_sha256=reference_sha,
                idempotency_key=req.idempotency_key or "",
                created_at=now,
                stage_updated_at=now,
            )
            session.add(row)
            session.add(
                StageTransition(
                    model_version=row,
                    action=st.REGISTERED,
                    from_stage="",
                    to_stage=stage,
                    actor=req.actor,
                    reason=req.reason,
                    time=now,
                )
            )
            session.flush()
            session.refresh(row)
            view = _version_view(row, transitions=True)
            view.forced_past = forced
            return view

        return self.db.write(apply)

    def _run_for(self, session: Session, req: RegisterInput, experiment: str, now: datetime) -> Run:
        """The run a registration binds to: the one it names (now finished), or a new finished one."""
        if req.run_id:
            run = session.get(Run, req.run_id)
            if run is None:
                raise NotFound(f"no run {req.run_id!r} to register a version from", field="run_id")
            if run.status == FAILED:
                raise Conflict(f"run {run.id} failed ({run.reason or 'no reason given'}); it makes no version",
                               field="run_id")
            self.runs.merge(run, req.run)
            self.runs.add_final_metrics(run, req.run.metrics, now)
            run.status, run.finished_at = FINISHED, now
        else:
            run = self.runs.new_run(session, req.run, experiment, now, FINISHED)
            run.finished_at = now
        self.runs.check_lineage(run)
        session.flush()
        return run

    @staticmethod
    def _apply_changes(
        session: Session,
        model: RegisteredModel,
        changes: list[st.StageChange],
        *,
        reason: str,
        actor: str,
        now: datetime,
        cause: int,
    ) -> None:
        """Apply ``changes`` in order, one transition row each; ``cause`` is the version the caller moved."""
        rows = {v.number: v for v in model.versions}
        for change in changes:
            row = rows[change.version]
            row.stage = change.to_stage
            row.stage_updated_at = now
            why = reason
            if change.version != cause:
                why = f"superseded by version {cause}" + (f": {reason}" if reason else "")
            session.add(
                StageTransition(
                    model_version=row,
                    action=st.STAGE_CHANGED,
                    from_stage=change.from_stage,
                    to_stage=change.to_stage,
                    actor=actor,
                    reason=why,
                    time=now,
                )
            )
            # Flush each change so the one-production index never sees two at once.
            session.flush()

    # -- stages -------------------------------------------------------------------------------------------
    def set_stage(self, model: str, version: str, stage: str, *, reason: str = "", actor: str = "",
                  force: bool = False) -> VersionView:
        """Move a version; to production only when no gate of its run blocks it, or when forced (see
        :func:`_forced_past`). Setting the stage it already has changes nothing and checks nothing."""
        target = st.normalize_stage(stage)
        _check_force(force, target)

        def apply(session: Session) -> VersionView:
            row = self._version(session, model, version)
            changes = st.plan_transition(self._stages(row.model), row.number, target)
            forced = _forced_past(row.run, target, force=force, reason=reason,
                                  what=f"{model} v{row.number}") if changes else []
            self._apply_changes(session, row.model, changes, reason=reason, actor=actor, now=utcnow(), cause=row.number)
            session.flush()
            session.refresh(row)
            view = _version_view(row, transitions=True)
            view.forced_past = forced
            return view

        return self.db.write(apply)

    def rollback(self, model: str, *, reason: str = "", actor: str = "") -> VersionView:
        """Put back in production the version that held it before the current one."""

        def apply(session: Session) -> VersionView:
            m = self._model(session, model)
            history = session.execute(
                select(ModelVersionRow.number, StageTransition.to_stage)
                .join(StageTransition, StageTransition.model_version_id == ModelVersionRow.id)
                .where(ModelVersionRow.model_id == m.id)
                .order_by(StageTransition.id)
            ).all()
            stages = self._stages(m)
            target = st.rollback_target([(n, s) for n, s in history], stages)
            changes = st.plan_transition(stages, target, st.PRODUCTION)
            self._apply_changes(
                session, m, changes, reason=reason or "rollback", actor=actor, now=utcnow(), cause=target
            )
            session.flush()
            row = next(v for v in m.versions if v.number == target)
            session.refresh(row)
            return _version_view(row, transitions=True)

        return self.db.write(apply)

    # -- reads --------------------------------------------------------------------------------------------
    def get_version(self, model: str, version: str) -> VersionView:
        with self._session() as session:
            return _version_view(self._version(session, model, version), transitions=True)

    def list_versions(self, model: str = "", stages: list[str] | None = None) -> list[VersionView]:
        wanted = [st.normalize_stage(s) for s in stages or []]
        with self._session() as session:
            q = (
                select(ModelVersionRow)
                .join(RegisteredModel)
                .options(selectinload(ModelVersionRow.run), selectinload(ModelVersionRow.model))
                .order_by(RegisteredModel.name, ModelVersionRow.number)
            )
            if model:
                self._model(session, model)
                q = q.where(RegisteredModel.name == model)
            if wanted:
                q = q.where(ModelVersionRow.stage.in_(wanted))
            return [_version_view(r) for r in session.scalars(q)]

    def resolve_alias(self, model: str, alias: str) -> VersionView:
        with self._session() as session:
            m = self._model(session, model)
            try:
                number = st.resolve_alias(alias, self._stages(m))
            except LookupError as exc:
                raise NotFound(f"alias {alias!r} of model {model!r} names no version", field="alias") from exc
            return _version_view(self._version(session, model, str(number)), transitions=True)

    def _summary(self, m: RegisteredModel) -> ModelSummary:
        stages = self._stages(m)
        return ModelSummary(
            name=m.name,
            created_at=m.created_at,
            latest_version=str(max(stages)) if stages else "",
            versions={str(v): s for v, s in sorted(stages.items())},
            aliases={a: str(v) for a, v in st.aliases_of(stages).items()},
        )

    def list_models(self) -> list[ModelSummary]:
        with self._session() as session:
            q = select(RegisteredModel).options(selectinload(RegisteredModel.versions)).order_by(RegisteredModel.name)
            return [self._summary(m) for m in session.scalars(q)]

    def recent_transitions(self, limit: int) -> list[ModelTransition]:
        """The latest ``limit`` stage transitions of every model, newest first, in one query (the console's
        audit page read them one version at a time: a request per version)."""
        with self._session() as session:
            q = (
                select(StageTransition, RegisteredModel.name, ModelVersionRow.number)
                .join(ModelVersionRow, StageTransition.model_version_id == ModelVersionRow.id)
                .join(RegisteredModel, ModelVersionRow.model_id == RegisteredModel.id)
                .order_by(StageTransition.id.desc())
                .limit(limit)
            )
            return [ModelTransition(name, str(number), _transition(t)) for t, name, number in session.execute(q)]

    def get_model(self, name: str) -> ModelSummary:
        with self._session() as session:
            return self._summary(self._model(session, name))

    def list_experiments(self) -> list[ExperimentView]:
        return self.runs.list_experiments()

    def list_runs(self, experiment: str) -> list[RunView]:
        return self.runs.list(experiment)

    def get_run(self, run_id: str) -> RunView:
        return self.runs.get(run_id)

    def read_artifact(self, model: str, version: str) -> tuple[VersionView, bytes]:
        """A version and its artifact's bytes, verified against the recorded sha256."""
        view = self.get_version(model, version)
        return view, self.artifacts.get(view.artifact_sha256)

    def read_reference(self, model: str, version: str) -> tuple[VersionView, bytes]:
        """A version and its reference distributions (JSON bytes), verified against the recorded sha256."""
        view = self.get_version(model, version)
        if not view.reference_sha256:
            raise NotFound(f"{model} version {version} has no reference distributions", field="version")
        return view, self.artifacts.get(view.reference_sha256)

    # -- the lifecycle outbox -----------------------------------------------------------------------------
    def pending_events(self, limit: int = 500) -> list[LifecycleEvent]:
        with self._session() as session:
            rows = session.scalars(
                select(StageTransition)
                .where(StageTransition.published.is_(False))
                .options(selectinload(StageTransition.model_version).selectinload(ModelVersionRow.model))
                .order_by(StageTransition.id)
                .limit(limit)
            ).all()
            return [
                LifecycleEvent(
                    seq=t.id,
                    action=t.action,
                    model=t.model_version.model.name,
                    version=str(t.model_version.number),
                    stage=t.to_stage,
                    previous_stage=t.from_stage,
                    artifact_sha256=t.model_version.artifact_sha256,
                    reason=t.reason,
                    actor=t.actor,
                    time=t.time,
                )
                for t in rows
            ]

    def mark_published(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self._session() as session:
            for t in session.scalars(select(StageTransition).where(StageTransition.id.in_(seqs))):
                t.published = True
