"""The registry's logic over its database and artifact store, synchronous (callers run it off the event loop).

Writes are serialised by a lock within the process; the database's unique indexes (one version number
per model, one production version per model) keep several processes honest as well.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from mlops.errors import InvalidArgument, NotFound
from services.registry import stages as st
from services.registry.artifacts import ArtifactStore
from services.registry.db import (
    Base,
    Experiment,
    ModelVersionRow,
    RegisteredModel,
    Run,
    RunMetric,
    RunParam,
    RunTag,
    StageTransition,
    make_engine,
    utcnow,
)
from services.registry.views import (
    ExperimentView,
    LifecycleEvent,
    MetricPoint,
    ModelSummary,
    RegisterInput,
    RunView,
    Signature,
    Transition,
    VersionView,
)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FORMATS = ("torchscript",)
#: Until RunInfo carries a metric history, a run may send one as JSON in this tag:
#: ``[{"key", "value", "step", "time"?: epoch seconds}]``. It is stored as history, not as a tag.
HISTORY_TAG = "mlops.metric_history"
#: A caller that may retry a registration sends a key here; a second registration with the same key
#: returns the version the first one made instead of adding another.
IDEMPOTENCY_TAG = "mlops.idempotency_key"

T = TypeVar("T")


def check_name(value: str, field: str) -> str:
    value = (value or "").strip()
    if not NAME.match(value):
        raise InvalidArgument(
            f"{field} must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit",
            field=field,
        )
    return value


def parse_history(raw: str) -> list[MetricPoint]:
    """The metric history a run sent in :data:`HISTORY_TAG`."""
    try:
        items = json.loads(raw)
        points = []
        for item in items:
            t = item.get("time")
            points.append(
                MetricPoint(
                    key=str(item["key"]),
                    value=float(item["value"]),
                    step=int(item.get("step", 0)),
                    time=datetime.fromtimestamp(float(t), UTC) if t is not None else None,
                )
            )
        return points
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidArgument(f"{HISTORY_TAG} is not a valid metric history: {exc}", field="run.tags") from exc


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
    )


def _version_number(version: str) -> int:
    text = (version or "").strip()
    if not text.isdigit():
        raise NotFound(f"no version {version!r}", field="version")
    return int(text)


class RegistryStore:
    """Experiments, runs, model versions, stage transitions and artifacts."""

    def __init__(self, url: str, artifacts: ArtifactStore) -> None:
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.artifacts = artifacts
        self._write_lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(select(1))
        return True

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def _write(self, fn: Callable[[Session], T], attempts: int = 3) -> T:
        """Run ``fn`` in a transaction under the write lock, retrying a lost race on a unique index."""
        for attempt in range(attempts):
            try:
                with self._write_lock, self._session() as session:
                    return fn(session)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

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
    def register(self, req: RegisterInput) -> VersionView:
        """Store the artifact, record the run, and add the model's next version in the requested stage."""
        name = check_name(req.model, "model")
        stage = st.normalize_stage(req.stage, default=st.CANDIDATE)
        if not req.artifact:
            raise InvalidArgument("artifact is empty", field="artifact")
        fmt = (req.artifact_format or "torchscript").strip().lower()
        if fmt not in FORMATS:
            raise InvalidArgument(
                f"unsupported artifact_format {req.artifact_format!r}; expected one of {', '.join(FORMATS)}",
                field="artifact_format",
            )
        features = [f.strip() for f in req.signature.features]
        if not features or any(not f for f in features) or len(set(features)) != len(features):
            raise InvalidArgument("signature.features must be distinct, non-empty names", field="signature.features")
        signature = {
            "features": features,
            "input_name": req.signature.input_name or "input",
            "output_name": req.signature.output_name or "output",
            "classes": list(req.signature.classes),
        }
        experiment_name = check_name(req.run.experiment or name, "run.experiment")
        tags = dict(req.run.tags)
        history = list(req.run.history)
        if HISTORY_TAG in tags:
            history += parse_history(tags.pop(HISTORY_TAG))
        sha = self.artifacts.put(req.artifact)

        def apply(session: Session) -> VersionView:
            now = utcnow()
            key = tags.get(IDEMPOTENCY_TAG)
            if key:
                earlier = session.scalar(
                    select(ModelVersionRow)
                    .join(RegisteredModel)
                    .join(RunTag, RunTag.run_id == ModelVersionRow.run_id)
                    .where(RegisteredModel.name == name, RunTag.key == IDEMPOTENCY_TAG, RunTag.value == key)
                )
                if earlier is not None:
                    return _version_view(earlier, transitions=True)
            experiment = session.scalar(select(Experiment).where(Experiment.name == experiment_name))
            if experiment is None:
                experiment = Experiment(name=experiment_name, created_at=now)
                session.add(experiment)
                session.flush()
            run = self._new_run(session, experiment, req, tags, history, now)
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
            return _version_view(row, transitions=True)

        return self._write(apply)

    @staticmethod
    def _new_run(
        session: Session,
        experiment: Experiment,
        req: RegisterInput,
        tags: dict[str, str],
        history: list[MetricPoint],
        now: datetime,
    ) -> Run:
        r = req.run
        run = Run(
            id=uuid.uuid4().hex,
            experiment=experiment,
            created_at=now,
            dataset_id=r.dataset_id,
            git_commit=r.git_commit,
            git_dirty=r.git_dirty,
            python_version=r.python_version,
            seed=int(r.seed),
            hardware=r.hardware,
        )
        run.params = [RunParam(key=k, value=str(v)) for k, v in sorted(r.params.items())]
        run.tags = [RunTag(key=k, value=str(v)) for k, v in sorted(tags.items())]
        points = [RunMetric(key=p.key, value=p.value, step=p.step, time=p.time or now) for p in history]
        last: dict[str, RunMetric] = {}
        for p in points:
            if p.key not in last or p.step >= last[p.key].step:
                last[p.key] = p
        for key, value in sorted(r.metrics.items()):
            prior = last.get(key)
            if prior is not None and prior.value == float(value):
                continue
            points.append(RunMetric(key=key, value=float(value), step=prior.step + 1 if prior else 0, time=now))
        run.metrics = points
        session.add(run)
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
    def set_stage(self, model: str, version: str, stage: str, *, reason: str = "", actor: str = "") -> VersionView:
        target = st.normalize_stage(stage)

        def apply(session: Session) -> VersionView:
            row = self._version(session, model, version)
            changes = st.plan_transition(self._stages(row.model), row.number, target)
            self._apply_changes(session, row.model, changes, reason=reason, actor=actor, now=utcnow(), cause=row.number)
            session.flush()
            session.refresh(row)
            return _version_view(row, transitions=True)

        return self._write(apply)

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

        return self._write(apply)

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

    def get_model(self, name: str) -> ModelSummary:
        with self._session() as session:
            return self._summary(self._model(session, name))

    def list_experiments(self) -> list[ExperimentView]:
        with self._session() as session:
            out = []
            for e in session.scalars(select(Experiment).order_by(Experiment.name)):
                latest = session.scalar(
                    select(Run.id).where(Run.experiment_id == e.id).order_by(Run.created_at.desc()).limit(1)
                )
                count = session.scalar(select(func.count()).select_from(Run).where(Run.experiment_id == e.id))
                out.append(ExperimentView(e.id, e.name, e.created_at, int(count or 0), latest or ""))
            return out

    def list_runs(self, experiment: str) -> list[RunView]:
        with self._session() as session:
            e = session.scalar(select(Experiment).where(Experiment.name == experiment))
            if e is None:
                raise NotFound(f"no experiment {experiment!r}", field="experiment")
            ids = session.scalars(select(Run.id).where(Run.experiment_id == e.id).order_by(Run.created_at)).all()
        return [self.get_run(i) for i in ids]

    def get_run(self, run_id: str) -> RunView:
        with self._session() as session:
            run = session.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run {run_id!r}", field="run_id")
            history = [MetricPoint(m.key, m.value, m.step, m.time) for m in run.metrics]
            latest: dict[str, MetricPoint] = {}
            for p in history:
                if p.key not in latest or p.step >= latest[p.key].step:
                    latest[p.key] = p
            versions = session.scalars(
                select(ModelVersionRow).where(ModelVersionRow.run_id == run.id).order_by(ModelVersionRow.id)
            ).all()
            env: dict[str, Any] = {
                "dataset_id": run.dataset_id,
                "git_commit": run.git_commit,
                "git_dirty": run.git_dirty,
                "python_version": run.python_version,
                "seed": run.seed,
                "hardware": run.hardware,
            }
            return RunView(
                id=run.id,
                experiment=run.experiment.name,
                status=run.status,
                created_at=run.created_at,
                params={p.key: p.value for p in run.params},
                metrics={k: p.value for k, p in sorted(latest.items())},
                history=history,
                tags={t.key: t.value for t in run.tags},
                env=env,
                artifacts=[
                    {
                        "model": v.model.name,
                        "version": str(v.number),
                        "sha256": v.artifact_sha256,
                        "format": v.artifact_format,
                        "size": v.artifact_size,
                        "stage": v.stage,
                    }
                    for v in versions
                ],
            )

    def read_artifact(self, model: str, version: str) -> tuple[VersionView, bytes]:
        """A version and its artifact's bytes, verified against the recorded sha256."""
        view = self.get_version(model, version)
        return view, self.artifacts.get(view.artifact_sha256)

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
