"""Experiment tracking: runs with params, metric histories, tags, captured environment, gates and files.

A run is started before training (``POST /v1/runs``), receives every epoch's metrics while it trains,
and ends either ``finished`` (a model version was registered from it) or ``failed`` with the reason
(for example a gate the model did not pass). A registration may also record its run in one step.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mlops.errors import Conflict, InvalidArgument, NotFound
from mlops.names import is_name
from services.registry.artifacts import ArtifactStore
from services.registry.db import (
    Experiment,
    ModelVersionRow,
    Run,
    RunArtifact,
    RunMetric,
    RunParam,
    RunTag,
    utcnow,
)
from services.registry.session import Database
from services.registry.views import ExperimentView, GateResult, MetricPoint, RunInput, RunView

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
RUNNING, FINISHED, FAILED = "running", "finished", "failed"
STATUSES = (RUNNING, FINISHED, FAILED)
#: What a run must have captured before a model version may be made from it (lineage by construction).
REQUIRED_LINEAGE = ("dataset_id", "git_commit", "python_version")


def check_name(value: str, field: str) -> str:
    value = (value or "").strip()
    if not is_name(value):  # the platform's one name rule (mlops.names)
        raise InvalidArgument(
            f"{field} must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit",
            field=field,
        )
    return value


def check_points(points: list[MetricPoint]) -> list[MetricPoint]:
    for p in points:
        if not p.key or len(p.key) > 250:
            raise InvalidArgument("a metric needs a key of 1-250 characters", field="metrics.key")
        if p.value != p.value:  # NaN compares unequal to itself; it would poison comparisons
            raise InvalidArgument(f"metric {p.key!r} is NaN", field="metrics.value")
        if p.step < 0:
            raise InvalidArgument(f"metric {p.key!r} has a negative step", field="metrics.step")
    return points


def _latest(points: list[RunMetric]) -> dict[str, RunMetric]:
    """Each metric's value at its highest step (the last logged wins a tie)."""
    last: dict[str, RunMetric] = {}
    for p in sorted(points, key=lambda m: (m.step, m.id or 0)):
        last[p.key] = p
    return last


class RunStore:
    """Runs and experiments over :class:`Database`; files go to the content-addressed store."""

    def __init__(self, db: Database, artifacts: ArtifactStore) -> None:
        self.db = db
        self.artifacts = artifacts

    # -- writing, within a caller's transaction ---------------------------------------------------------
    @staticmethod
    def experiment(session: Session, name: str, now: datetime) -> Experiment:
        experiment = session.scalar(select(Experiment).where(Experiment.name == name))
        if experiment is None:
            experiment = Experiment(name=name, created_at=now)
            session.add(experiment)
            session.flush()
        return experiment

    @staticmethod
    def _fill(run: Run, r: RunInput) -> None:
        """Copy the captured environment onto ``run``; empty fields leave what is there."""
        for name in ("dataset_id", "definitions_hash", "git_commit", "diff_sha256", "python_version", "pip_freeze",
                     "hardware"):
            value = getattr(r, name)
            if value:
                setattr(run, name, value)
        if r.git_commit:
            run.git_dirty = bool(r.git_dirty)
        if r.seed or run.seed is None:
            run.seed = int(r.seed)

    def new_run(self, session: Session, r: RunInput, experiment_name: str, now: datetime, status: str) -> Run:
        experiment = self.experiment(session, check_name(experiment_name, "run.experiment"), now)
        run = Run(id=uuid.uuid4().hex, experiment=experiment, created_at=now, status=status, run_key=r.key or "",
                  seed=0, git_dirty=False)
        self._fill(run, r)
        run.params = [RunParam(key=k, value=str(v)) for k, v in sorted(r.params.items())]
        run.tags = [RunTag(key=k, value=str(v)) for k, v in sorted(r.tags.items())]
        run.metrics = [RunMetric(key=p.key, value=p.value, step=p.step, time=p.time or now)
                       for p in check_points(r.history)]
        session.add(run)
        session.flush()
        self.add_final_metrics(run, r.metrics, now)
        return run

    @staticmethod
    def add_final_metrics(run: Run, metrics: dict[str, float], now: datetime) -> None:
        """Record end-of-run values; one equal to the metric's latest point is not repeated."""
        last = _latest(list(run.metrics))
        for key, value in sorted(metrics.items()):
            prior = last.get(key)
            if prior is not None and prior.value == float(value):
                continue
            step = prior.step + 1 if prior else 0
            run.metrics.append(RunMetric(key=key, value=float(value), step=step, time=now))

    @staticmethod
    def merge(run: Run, r: RunInput) -> None:
        """Add params and tags a registration brings to an existing run (existing keys are overwritten)."""
        params = {p.key: p for p in run.params}
        for k, v in r.params.items():
            if k in params:
                params[k].value = str(v)
            else:
                run.params.append(RunParam(key=k, value=str(v)))
        tags = {t.key: t for t in run.tags}
        for k, v in r.tags.items():
            if k in tags:
                tags[k].value = str(v)
            else:
                run.tags.append(RunTag(key=k, value=str(v)))
        RunStore._fill(run, r)

    @staticmethod
    def check_lineage(run: Run | RunInput) -> None:
        for name in REQUIRED_LINEAGE:
            if not getattr(run, name):
                raise InvalidArgument(
                    f"run.{name} is required: a model version cannot exist without its dataset version, "
                    "code version and environment",
                    field=f"run.{name}",
                )

    # -- the API ----------------------------------------------------------------------------------------
    def start(self, r: RunInput) -> RunView:
        """A new running run; with a key seen before in the experiment, that run (restarted if unfinished)."""
        name = check_name(r.experiment, "experiment")
        check_points(r.history)

        def apply(session: Session) -> str:
            now = utcnow()
            if r.key:
                earlier = session.scalar(
                    select(Run).join(Experiment).where(Experiment.name == name, Run.run_key == r.key)
                )
                if earlier is not None:
                    if earlier.status == RUNNING:
                        # A retried attempt: its history starts again, so steps are not logged twice.
                        session.execute(delete(RunMetric).where(RunMetric.run_id == earlier.id))
                        session.expire(earlier, ["metrics"])
                        self.merge(earlier, r)
                        earlier.reason, earlier.gates_json = "", "[]"
                    return earlier.id
            return self.new_run(session, r, name, now, RUNNING).id

        return self.get(self.db.write(apply))

    def log_metrics(self, run_id: str, points: list[MetricPoint]) -> int:
        check_points(points)

        def apply(session: Session) -> int:
            run = self._run(session, run_id)
            now = utcnow()
            session.add_all(RunMetric(run_id=run.id, key=p.key, value=p.value, step=p.step, time=p.time or now)
                            for p in points)
            return len(points)

        return self.db.write(apply)

    def update(
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
        """Change a run's status, reason, gates, params, tags or final metrics; a finished run stays finished."""
        if status and status not in STATUSES:
            raise InvalidArgument(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}", field="status")

        def apply(session: Session) -> str:
            run = self._run(session, run_id)
            now = utcnow()
            if status and status != run.status:
                if run.status == FINISHED:
                    raise Conflict(f"run {run_id} is finished; its status cannot change", field="status")
                if status == FINISHED and not any(v.run_id == run.id for v in self._versions(session, run.id)):
                    # "finished" means a model version came out of it; only a registration says so.
                    raise Conflict("a run is finished by registering a model version from it", field="status")
                run.status = status
                run.finished_at = now if status != RUNNING else None
            if reason is not None:
                run.reason = reason
            if gates is not None:
                run.gates_json = json.dumps([g.to_dict() for g in gates])
            self.merge(run, RunInput(params=params or {}, tags=tags or {}))
            if metrics:
                self.add_final_metrics(run, metrics, now)
            return run.id

        return self.get(self.db.write(apply))

    def put_file(self, run_id: str, name: str, data: bytes) -> dict[str, Any]:
        if not FILE_NAME.match(name or ""):
            raise InvalidArgument("a file name is 1-200 letters, digits, '.', '_' or '-'", field="name")
        sha = self.artifacts.put(data)

        def apply(session: Session) -> dict[str, Any]:
            run = self._run(session, run_id)
            row = session.get(RunArtifact, (run.id, name))
            if row is None:
                session.add(RunArtifact(run_id=run.id, name=name, sha256=sha, size=len(data), created_at=utcnow()))
            else:
                row.sha256, row.size = sha, len(data)
            return {"name": name, "sha256": sha, "size": len(data)}

        return self.db.write(apply)

    def read_file(self, run_id: str, name: str) -> tuple[dict[str, Any], bytes]:
        with self.db.session() as session:
            self._run(session, run_id)
            row = session.get(RunArtifact, (run_id, name))
            if row is None:
                raise NotFound(f"run {run_id} has no file {name!r}", field="name")
            meta = {"name": row.name, "sha256": row.sha256, "size": row.size}
        return meta, self.artifacts.get(meta["sha256"])

    # -- reads ------------------------------------------------------------------------------------------
    @staticmethod
    def _run(session: Session, run_id: str) -> Run:
        run = session.get(Run, run_id) if run_id else None
        if run is None:
            raise NotFound(f"no run {run_id!r}", field="run_id")
        return run

    @staticmethod
    def _versions(session: Session, run_id: str) -> list[ModelVersionRow]:
        return list(session.scalars(
            select(ModelVersionRow).where(ModelVersionRow.run_id == run_id).order_by(ModelVersionRow.id)
        ).all())

    def get(self, run_id: str) -> RunView:
        with self.db.session() as session:
            return self.view(session, self._run(session, run_id))

    def view(self, session: Session, run: Run) -> RunView:
        history = [MetricPoint(m.key, m.value, m.step, m.time) for m in run.metrics]
        latest = _latest(list(run.metrics))
        env: dict[str, Any] = {
            "dataset_id": run.dataset_id,
            "definitions_hash": run.definitions_hash,
            "git_commit": run.git_commit,
            "git_dirty": run.git_dirty,
            "diff_sha256": run.diff_sha256,
            "python_version": run.python_version,
            "pip_freeze": run.pip_freeze,
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
                for v in self._versions(session, run.id)
            ],
            files=[{"name": f.name, "sha256": f.sha256, "size": f.size} for f in run.artifacts],
            gates=[GateResult.from_dict(g) for g in json.loads(run.gates_json or "[]")],
            reason=run.reason,
            finished_at=run.finished_at,
            key=run.run_key,
        )

    def list_experiments(self) -> list[ExperimentView]:
        with self.db.session() as session:
            out = []
            for e in session.scalars(select(Experiment).order_by(Experiment.name)):
                ids = session.scalars(select(Run.id).where(Run.experiment_id == e.id)
                                      .order_by(Run.created_at.desc())).all()
                out.append(ExperimentView(e.id, e.name, e.created_at, len(ids), ids[0] if ids else ""))
            return out

    def list(self, experiment: str) -> list[RunView]:
        with self.db.session() as session:
            e = session.scalar(select(Experiment).where(Experiment.name == experiment))
            if e is None:
                raise NotFound(f"no experiment {experiment!r}", field="experiment")
            runs = session.scalars(select(Run).where(Run.experiment_id == e.id).order_by(Run.created_at)).all()
            return [self.view(session, r) for r in runs]
