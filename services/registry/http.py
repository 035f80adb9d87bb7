"""REST adapter for the registry (see the contract): models, versions, stages, aliases, cards, runs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

from services.registry.core import Registry

ActorHeader = Annotated[str | None, Header(alias="X-Mlops-Actor", description="Who makes the change.")]


class StageChangeRequest(BaseModel):
    stage: str = Field(description="candidate | shadow | canary | production | archived")
    reason: str = Field("", description="Why; recorded with the transition.")


class RollbackRequest(BaseModel):
    reason: str = Field("", description="Why; recorded with the transitions.")


def router(registry: Registry) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["registry"])

    @api.get("/models")
    async def list_models() -> dict[str, Any]:
        return {"models": [m.to_dict() for m in await registry.list_models()]}

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
        view = await registry.set_stage(name, version, body.stage, reason=body.reason, actor=actor or "rest")
        return view.to_dict()

    @api.post("/models/{name}/rollback")
    async def rollback(name: str, body: RollbackRequest | None = None, actor: ActorHeader = None) -> dict[str, Any]:
        reason = body.reason if body else ""
        return (await registry.rollback(name, reason=reason, actor=actor or "rest")).to_dict()

    @api.get("/models/{name}/aliases/{alias}")
    async def resolve_alias(name: str, alias: str) -> dict[str, Any]:
        return {"alias": alias, **(await registry.resolve_alias(name, alias)).to_dict()}

    @api.get("/models/{name}/versions/{version}/card", response_model=None)
    async def card(
        name: str, version: str, request: Request, format: str | None = None
    ) -> dict[str, Any] | PlainTextResponse:
        body = await registry.card(name, version)
        wants_markdown = format == "markdown" or (
            format is None and "text/markdown" in request.headers.get("accept", "")
        )
        if wants_markdown:
            return PlainTextResponse(body["markdown"], media_type="text/markdown; charset=utf-8")
        return body

    @api.get("/models/{name}/versions/{version}/artifact")
    async def artifact(name: str, version: str) -> Response:
        view, data = await registry.artifact(name, version)
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"X-Artifact-Sha256": view.artifact_sha256, "X-Artifact-Format": view.artifact_format},
        )

    @api.get("/experiments")
    async def list_experiments() -> dict[str, Any]:
        return {"experiments": [e.to_dict() for e in await registry.list_experiments()]}

    @api.get("/experiments/{name}/runs")
    async def list_runs(name: str) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in await registry.list_runs(name)]}

    @api.get("/runs/{run_id}")
    async def get_run(run_id: str) -> dict[str, Any]:
        return (await registry.get_run(run_id)).to_dict()

    return api
