"""Training jobs: the spec and its validation, the job record, and its state in Redis.

A job lives in the hash ``mlops:trainer:job:{id}``; ``mlops:trainer:jobs`` indexes them by creation
time. Creation is one Lua script that also claims the request id (and the Kafka event id, when there
is one), so a request delivered twice makes one job.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from mlops.errors import InvalidArgument
from mlops.names import check_name
from mlops.stages import CANDIDATE, PRODUCTION, normalize_stage
from mlops.v1 import trainer_pb2

PREFIX = "mlops:trainer:"
INDEX = f"{PREFIX}jobs"
QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
UNFINISHED = (QUEUED, RUNNING)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def request_key(request_id: str) -> str:
    return f"{PREFIX}request:{request_id}"


def event_key(event_id: str) -> str:
    return f"{PREFIX}event:{event_id}"


@dataclass(slots=True)
class JobSpec:
    """What to train. Empty stream, features or label mean "as the current production version was trained"
    (taken from its lineage when the job runs); zero numbers mean the trainer's defaults."""

    model: str
    stream: str = ""
    features: list[str] = field(default_factory=list)
    label: str = ""
    stage: str = "candidate"
    epochs: int = 0
    seed: int = 0
    reason: str = ""
    recent_rows: int = 0  # train on the most recent rows only (feature BuildDatasetRequest.last_n)
    sensitive_attribute: str = ""  # fairness gate: the attribute whose groups must be treated alike
    fairness_max_gap: float = 0.0  # 0: the trainer's default
    processes: int = 0  # data-parallel processes (torchrun); 0: the trainer's default
    #: the token id of whoever asked (set by the trainer from the caller's token, never from the request body):
    #: the trainer registers with its own token on their behalf, and the audit trail names them
    requested_by: str = ""
    #: with stage production: register although a gate was skipped (needs ``reason``; the stage already needs
    #: the promote permission; the registry audits it as ``stage.forced``)
    force: bool = False

    def to_proto(self) -> trainer_pb2.TrainingJobSpec:
        return trainer_pb2.TrainingJobSpec(
            model=self.model, stream=self.stream, features=self.features, label=self.label, stage=self.stage,
            epochs=self.epochs, seed=self.seed, reason=self.reason, recent_rows=self.recent_rows, force=self.force,
        )

    @classmethod
    def from_proto(cls, msg: trainer_pb2.TrainingJobSpec) -> JobSpec:
        return cls(
            model=msg.model,
            stream=msg.stream,
            features=list(msg.features),
            label=msg.label,
            stage=msg.stage,
            epochs=msg.epochs,
            seed=msg.seed,
            reason=msg.reason,
            recent_rows=msg.recent_rows,
            force=msg.force,
        )

    @property
    def inherits(self) -> bool:
        """Whether stream, features or label must come from the production version's lineage."""
        return not (self.stream and self.features and self.label)


def validate_spec(spec: JobSpec, *, default_epochs: int, max_epochs: int, max_processes: int = 8) -> JobSpec:
    """A checked copy of ``spec`` with defaults filled in; bad input raises InvalidArgument naming the field."""
    model = (spec.model or "").strip()
    if not NAME.match(model):
        raise InvalidArgument("model must be 1-128 letters, digits, '.', '_' or '-'", field="model")
    stream = (spec.stream or "").strip()
    if stream:
        check_name(stream, "stream")  # it becomes a path in the offline store
    features = [f.strip() for f in spec.features]
    if any(not f for f in features) or len(set(features)) != len(features):
        raise InvalidArgument("features must be distinct, non-empty names", field="features")
    label = (spec.label or "").strip()
    if label and label in features:
        raise InvalidArgument(f"label {label!r} is also listed as a feature", field="label")
    attribute = (spec.sensitive_attribute or "").strip()
    if attribute and attribute == label:
        raise InvalidArgument("the sensitive attribute cannot be the label", field="sensitive_attribute")
    stage = normalize_stage(spec.stage, default=CANDIDATE)  # as the guard and the registry read it
    epochs = spec.epochs or default_epochs
    if not 1 <= epochs <= max_epochs:
        raise InvalidArgument(f"epochs must be between 1 and {max_epochs}", field="epochs")
    if spec.seed < 0:
        raise InvalidArgument("seed must be non-negative", field="seed")
    if spec.recent_rows < 0:
        raise InvalidArgument("recent_rows must be non-negative (0: every row)", field="recent_rows")
    if not 0.0 <= spec.fairness_max_gap <= 1.0:
        raise InvalidArgument("fairness_max_gap must be between 0 and 1 (0: the default)", field="fairness_max_gap")
    if not 0 <= spec.processes <= max_processes:
        raise InvalidArgument(f"processes must be between 0 and {max_processes}", field="processes")
    reason = (spec.reason or "").strip()
    if spec.force and stage != PRODUCTION:
        raise InvalidArgument("force applies to a production stage only (other stages are never blocked by a "
                              "skipped gate)", field="force")
    if spec.force and not reason:
        raise InvalidArgument("force needs a reason: it is recorded in the audit trail", field="reason")
    return JobSpec(model, stream, features, label, stage, epochs, spec.seed, reason, spec.recent_rows,
                   attribute, spec.fairness_max_gap, spec.processes, spec.requested_by, spec.force)


@dataclass(slots=True)
class Job:
    id: str
    spec: JobSpec
    state: str = QUEUED
    progress: float = 0.0
    run_id: str = ""
    version: str = ""
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    request_id: str = ""
    dataset_id: str = ""
    gates: list[dict[str, Any]] = field(default_factory=list)
    inherited_from: str = ""  # "model/version" whose lineage gave stream, features or label
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0

    @property
    def model(self) -> str:
        return self.spec.model

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "progress": self.progress,
            "run_id": self.run_id,
            "model": self.model,
            "version": self.version,
            "error": self.error,
            "metrics": self.metrics,
            "spec": asdict(self.spec),
            "request_id": self.request_id,
            "dataset_id": self.dataset_id,
            "gates": self.gates,
            "inherited_from": self.inherited_from,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }

    def to_proto(self) -> trainer_pb2.TrainingJob:
        return trainer_pb2.TrainingJob(
            id=self.id,
            state=self.state,
            progress=self.progress,
            run_id=self.run_id,
            model=self.model,
            version=self.version,
            error=self.error,
            spec=self.spec.to_proto(),
            metrics=self.metrics,
        )

    def to_redis(self) -> dict[str, str]:
        return {
            "id": self.id,
            "state": self.state,
            "progress": repr(self.progress),
            "run_id": self.run_id,
            "model": self.model,
            "version": self.version,
            "error": self.error,
            "metrics": json.dumps(self.metrics),
            "spec": json.dumps(asdict(self.spec)),
            "request_id": self.request_id,
            "dataset_id": self.dataset_id,
            "gates": json.dumps(self.gates),
            "inherited_from": self.inherited_from,
            "created_at": repr(self.created_at),
            "updated_at": repr(self.updated_at),
            "started_at": repr(self.started_at),
            "finished_at": repr(self.finished_at),
        }

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes]) -> Job:
        d = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            id=d["id"],
            spec=JobSpec(**json.loads(d["spec"])),
            state=d.get("state", QUEUED),
            progress=float(d.get("progress", 0) or 0),
            run_id=d.get("run_id", ""),
            version=d.get("version", ""),
            error=d.get("error", ""),
            metrics=json.loads(d.get("metrics") or "{}"),
            request_id=d.get("request_id", ""),
            dataset_id=d.get("dataset_id", ""),
            gates=json.loads(d.get("gates") or "[]"),
            inherited_from=d.get("inherited_from", ""),
            created_at=float(d.get("created_at", 0) or 0),
            updated_at=float(d.get("updated_at", 0) or 0),
            started_at=float(d.get("started_at", 0) or 0),
            finished_at=float(d.get("finished_at", 0) or 0),
        )


def _iso(ts: float) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat()


# KEYS: request key, event key ("" when none), job key, index. ARGV: job id, score, then field/value pairs.
# Returns the id of the job that owns the request: an earlier one, or this new one.
_CREATE = """
local owner = redis.call('GET', KEYS[1])
if not owner and KEYS[2] ~= '' then owner = redis.call('GET', KEYS[2]) end
if owner then
  if KEYS[2] ~= '' then redis.call('SET', KEYS[2], owner) end
  return owner
end
redis.call('SET', KEYS[1], ARGV[1])
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], ARGV[1]) end
redis.call('HSET', KEYS[3], unpack(ARGV, 3))
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
return ARGV[1]
"""

# KEYS: job key. ARGV: progress, now. Raises progress of a running job, never lowers it.
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], 'progress') or '0')
if tonumber(ARGV[1]) <= cur then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[1], 'updated_at', ARGV[2])
return 1
"""


class JobStore:
    """Jobs in Redis."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._create = redis.register_script(_CREATE)
        self._progress = redis.register_script(_PROGRESS)

    async def create(self, spec: JobSpec, *, request_id: str = "", event_id: str = "") -> tuple[Job, bool]:
        """A new queued job for ``spec``, or the job that already owns ``request_id``/``event_id``.

        Returns the job and whether it was created by this call.
        """
        now = time.time()
        job = Job(id=uuid.uuid4().hex, spec=spec, request_id=request_id, created_at=now, updated_at=now)
        job.request_id = request_id or job.id
        pairs = [x for kv in job.to_redis().items() for x in kv]
        owner = await self._create(
            keys=[request_key(job.request_id), event_key(event_id) if event_id else "", job_key(job.id), INDEX],
            args=[job.id, repr(now), *pairs],
        )
        owner_id = owner.decode() if isinstance(owner, bytes) else str(owner)
        if owner_id == job.id:
            return job, True
        existing = await self.get(owner_id)
        if existing is None:
            raise RuntimeError(f"request {job.request_id} points at missing job {owner_id}")
        return existing, False

    async def get(self, job_id: str) -> Job | None:
        raw = await self._redis.hgetall(job_key(job_id))
        return Job.from_redis(raw) if raw else None

    async def update(self, job_id: str, **fields: Any) -> None:
        values: dict[str, str] = {"updated_at": repr(time.time())}
        for key, value in fields.items():
            values[key] = (
                json.dumps(value)
                if isinstance(value, dict | list)
                else (repr(value) if isinstance(value, float) else str(value))
            )
        await self._redis.hset(job_key(job_id), mapping=values)

    async def progress(self, job_id: str, fraction: float) -> None:
        await self._progress(keys=[job_key(job_id)], args=[repr(round(fraction, 4)), repr(time.time())])

    async def recent(self, limit: int = 50) -> list[Job]:
        ids = await self._redis.zrevrange(INDEX, 0, max(0, limit - 1))
        jobs = [await self.get(i.decode()) for i in ids]
        return [j for j in jobs if j is not None]

    async def unfinished(self, scan_limit: int = 1000) -> list[Job]:
        """Jobs left queued or running (by a process that stopped), oldest first."""
        ids = await self._redis.zrevrange(INDEX, 0, scan_limit - 1)
        jobs = [await self.get(i.decode()) for i in reversed(ids)]
        return [j for j in jobs if j is not None and j.state in UNFINISHED]
