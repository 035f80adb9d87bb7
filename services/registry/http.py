"""REST adapter for the registry (see the contract): models, versions, stages, aliases, rollback, cards,
references, lineage; experiments and runs (start, metrics, status, files, comparison)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

from mlops.errors import InvalidArgument
from services.registry.actor import who
from services.registry.core import Registry
from services.registry.views import GateResult, MetricPoint, RunInput

#: The most transitions one ``GET /v1/transitions`` returns.
MAX_TRANSITIONS = 1000

#: SQLite stores integers in 64 bits: a larger seed or step failed the insert (a 500).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: A metric value JSON can carry back: NaN and infinities were stored, then failed every read of the run.
MetricValue = Annotated[float, Field(allow_inf_nan=False)]

ActorHeader = Annotated[str | None, Header(alias="X-Mlops-Actor", description="Who makes the change.")]


class StageChangeRequest(BaseModel):
    stage: str = Field(description="candidate | shadow | canary | production | archived")
    reason: str = Field("", description="Why; recorded with the transition.")
    force: bool = Field(False, description="To production although a gate of the version's run was skipped or "
                        "failed: needs a reason (and the promote permission, as production does); audited.")


class RollbackRequest(BaseModel):
    reason: str = Field("", description="Why; recorded with the transitions.")


class MetricIn(BaseModel):
    key: str
    value: MetricValue
    step: int = Field(0, ge=0, le=INT64_MAX)
    # Bounded to years 1970..9999, which datetime can represent.
    time: float | None = Field(None, ge=0, le=253402300799,
                               description="Epoch seconds; default: when the registry receives it.")

    def point(self) -> MetricPoint:
        when = datetime.fromtimestamp(self.time, UTC) if self.time is not None else None
        return MetricPoint(self.key, self.value, self.step, when)


class RunCreate(BaseModel):
    """A run to start; what it captured about its environment comes with it."""

    experiment: str
    key: str = Field("", description="Idempotency key: a second start with it returns (and restarts) that run.")
    params: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    dataset_id: str = ""
    definitions_hash: str = Field("", description="Hash of the feature definitions the dataset was built with.")
    git_commit: str = ""
    git_dirty: bool = False
    diff_sha256: str = Field("", description="sha256 of the uncommitted changes when the tree was dirty.")
    python_version: str = ""
    pip_freeze: str = Field("", description="Installed packages, one `name==version` a line.")
    seed: int = Field(0, ge=INT64_MIN, le=INT64_MAX)
    hardware: str = ""


class MetricsLog(BaseModel):
    metrics: list[MetricIn]


class GateIn(BaseModel):
    name: str
    passed: bool
    reason: str = ""
    skipped: bool = False
    details: dict[str, Any] = Field(default_factory=dict)
    not_applicable: bool = Field(False, description="Skipped with nothing to check against (blocks nothing).")


class RunUpdate(BaseModel):
    status: str = Field("", description="running | failed (a run finishes by registering a version from it).")
    reason: str | None = Field(None, description="Why it failed, for example the gate it did not pass.")
    gates: list[GateIn] | None = None
    params: dict[str, str] | None = None
    tags: dict[str, str] | None = None
    metrics: dict[str, MetricValue] | None = Field(None, description="Final values, added to each metric's history.")


def _markdown_wanted(request: Request, format: str | None) -> bool:
    return format == "markdown" or (format is None and "text/markdown" in request.headers.get("accept", ""))


def router(registry: Registry) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["registry"])

    @api.get("/models")
    async def list_models() -> dict[str, Any]:
        return {"models": [m.to_dict() for m in await registry.list_models()]}

    @api.get("/transitions")
    async def recent_transitions(
        limit: int = Query(200, ge=1, le=MAX_TRANSITIONS, description="How many, newest first."),
    ) -> dict[str, Any]:
        """Stage transitions of every model and version, newest first (registrations included)."""
        return {"transitions": [t.to_dict() for t in await registry.recent_transitions(limit)]}

    @api.get("/models/{name}")
    async def get_model(name: str) -> dict[str, Any]:
        return (await registry.get_model(name)).to_dict()

    @api.get("/models/{name}/versions")
    async def list_versions(name: str, stage: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:
        return {"versions": [v.to_dict() for v in await registry.list_versions(name, stage or [])]}

    @api.get("/models/{name}/versions/{version}")
    async def get_version(name: str, version: str) -> dict[str, Any]:
        return (await registry.get_version(name, version)).to_dict()

    @api.post("/models/{name}/versions/{version}/stage")
    async def set_stage(name: str, version: str, body: StageChangeRequest, actor: ActorHeader = None) -> dict[str, Any]:
        view = await registry.set_stage(name, version, body.stage, reason=body.reason, actor=who(actor, "rest"),
                                        force=body.force)
        return view.to_dict()

    @api.post("/models/{name}/rollback")
    async def rollback(name: str, body: RollbackRequest | None = None, actor: ActorHeader = None) -> dict[str, Any]:
        reason = body.reason if body else ""
        return (await registry.rollback(name, reason=reason, actor=who(actor, "rest"))).to_dict()

    @api.get("/models/{name}/aliases/{alias}")
    async def resolve_alias(name: str, alias: str) -> dict[str, Any]:
        return {"alias": alias, **(await registry.resolve_alias(name, alias)).to_dict()}

    @api.get("/models/{name}/versions/{version}/card", response_model=None)
    async def card(
        name: str, version: str, request: Request, format: str | None = None
    ) -> dict[str, Any] | PlainTextResponse:
        body = await registry.card(name, version)
        if _markdown_wanted(request, format):
            return PlainTextResponse(body["markdown"], media_type="text/markdown; charset=utf-8")
        return body

    @api.get("/models/{name}/versions/{version}/lineage")
    async def lineage(name: str, version: str) -> dict[str, Any]:
        return await registry.lineage(name, version)

    @api.get("/models/{name}/versions/{version}/artifact")
    async def artifact(name: str, version: str) -> Response:
        view, data = await registry.artifact(name, version)
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"X-Artifact-Sha256": view.artifact_sha256, "X-Artifact-Format": view.artifact_format},
        )

    @api.get("/models/{name}/versions/{version}/reference")
    async def reference(name: str, version: str) -> Response:
        view, data = await registry.reference(name, version)
        return Response(data, media_type="application/json", headers={"X-Reference-Sha256": view.reference_sha256})

    @api.get("/experiments")
    async def list_experiments() -> dict[str, Any]:
        return {"experiments": [e.to_dict() for e in await registry.list_experiments()]}

    @api.get("/experiments/{name}/runs")
    async def list_runs(name: str) -> dict[str, Any]:
        return {"runs": [r.to_dict(pip_freeze=False) for r in await registry.list_runs(name)]}

    @api.post("/runs", status_code=201)
    async def start_run(body: RunCreate) -> dict[str, Any]:
        return (await registry.start_run(RunInput(**body.model_dump()))).to_dict()

    @api.get("/runs/compare")
    async def compare_runs(run: Annotated[list[str], Query(description="Two or more run ids.")]) -> dict[str, Any]:
        if len(run) < 2:
            raise InvalidArgument("compare needs at least two runs: ?run=A&run=B", field="run")
        return await registry.compare_runs(run)

    @api.get("/runs/{run_id}")
    async def get_run(run_id: str) -> dict[str, Any]:
        return (await registry.get_run(run_id)).to_dict()

    @api.patch("/runs/{run_id}")
    async def update_run(run_id: str, body: RunUpdate) -> dict[str, Any]:
        gates = [GateResult(**g.model_dump()) for g in body.gates] if body.gates is not None else None
        view = await registry.update_run(run_id, status=body.status, reason=body.reason, gates=gates,
                                         params=body.params, tags=body.tags, metrics=body.metrics)
        return view.to_dict(pip_freeze=False)

    @api.post("/runs/{run_id}/metrics")
    async def log_metrics(run_id: str, body: MetricsLog) -> dict[str, Any]:
        return {"logged": await registry.log_metrics(run_id, [m.point() for m in body.metrics])}

    @api.put("/runs/{run_id}/files/{name}")
    async def put_file(run_id: str, name: str, request: Request) -> dict[str, Any]:
        """The request body, raw, is the file."""
        return await registry.put_run_file(run_id, name, await request.body())

    @api.get("/runs/{run_id}/files/{name}")
    async def get_file(run_id: str, name: str) -> Response:
        meta, data = await registry.read_run_file(run_id, name)
        return Response(data, media_type="application/octet-stream", headers={"X-Artifact-Sha256": meta["sha256"]})

    return api
