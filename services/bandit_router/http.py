"""REST transport of the bandit router: ``/v1/endpoints`` (specs and live state) and ``.../predict``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.bandit_router.core import EndpointState, Router
from services.bandit_router.spec import EndpointSpec, PolicySpec, VariantSpec


class VariantBase(BaseModel):
    model: str
    alias: str | None = Field(None, description="e.g. production, candidate (default production).")
    weight: float = Field(1.0, ge=0, description="Relative share of traffic under the fixed policy.")


class VariantIn(VariantBase):
    name: str | None = Field(None, description="Default: model:version or model@alias.")
    version: str | int | None = Field(None, description="A registry version; or give alias.")


class VariantPublic(VariantBase):
    name: str
    version: str | None = None


class PolicyModel(BaseModel):
    type: str = Field("fixed", description="A registered policy type.")
    params: dict[str, Any] = Field(default_factory=dict)


class EndpointIn(BaseModel):
    variants: list[VariantIn] = Field(min_length=1)
    policy: PolicyModel = Field(default_factory=PolicyModel)


class EndpointPublic(BaseModel):
    endpoint: str
    variants: list[VariantPublic]
    policy: PolicyModel


class EndpointList(BaseModel):
    endpoints: list[EndpointPublic]


class VariantStatePublic(VariantPublic):
    decisions: int
    traffic_share: float
    rewards: int
    reward_mean: float | None
    reward_ci_low: float | None = Field(None, description="95% interval (Student t); needs two rewards.")
    reward_ci_high: float | None
    prob_best: float | None = Field(None, description="P(highest mean reward); needs two rewards.")


class EndpointStatePublic(BaseModel):
    endpoint: str
    policy: PolicyModel
    decisions: int
    rewards: int
    variants: list[VariantStatePublic]


class PredictIn(BaseModel):
    unit_id: str | None = Field(None, description="Sticky assignment key (user, session...).")
    entity_id: str | None = Field(None, description="Read missing features from the online store.")
    features: dict[str, Any] | None = Field(None, description="Feature values by name.")


class PredictOut(BaseModel):
    prediction_id: str
    model: str
    version: str
    outputs: list[float]
    variant: str


def to_spec(endpoint: str, body: EndpointIn) -> EndpointSpec:
    return EndpointSpec(
        endpoint=endpoint,
        variants=tuple(
            VariantSpec(
                name=v.name or "",
                model=v.model,
                version="" if v.version is None else str(v.version),
                alias=v.alias or "",
                weight=v.weight,
            )
            for v in body.variants
        ),
        policy=PolicySpec(type=body.policy.type, params=dict(body.policy.params)),
    )


def _variant(v: VariantSpec) -> dict[str, Any]:
    return {
        "name": v.name,
        "model": v.model,
        "version": v.version or None,
        "alias": v.alias or None,
        "weight": v.weight,
    }


def public(spec: EndpointSpec) -> EndpointPublic:
    return EndpointPublic(
        endpoint=spec.endpoint,
        variants=[VariantPublic(**_variant(v)) for v in spec.variants],
        policy=PolicyModel(type=spec.policy.type, params=dict(spec.policy.params)),
    )


def public_state(state: EndpointState) -> EndpointStatePublic:
    variants = []
    for vs in state.variants:
        ci = vs.stats.ci95()
        variants.append(
            VariantStatePublic(
                **_variant(vs.spec),
                decisions=vs.stats.decisions,
                traffic_share=vs.traffic_share,
                rewards=vs.stats.rewards,
                reward_mean=vs.stats.mean,
                reward_ci_low=ci[0] if ci else None,
                reward_ci_high=ci[1] if ci else None,
                prob_best=vs.probability_best,
            )
        )
    return EndpointStatePublic(
        endpoint=state.spec.endpoint,
        policy=PolicyModel(type=state.spec.policy.type, params=dict(state.spec.policy.params)),
        decisions=sum(v.stats.decisions for v in state.variants),
        rewards=sum(v.stats.rewards for v in state.variants),
        variants=variants,
    )


def router(core: Router) -> APIRouter:
    api = APIRouter(prefix="/v1/endpoints", tags=["endpoints"])

    @api.get("")
    async def list_endpoints() -> EndpointList:
        return EndpointList(endpoints=[public(s) for s in await core.list_endpoints()])

    @api.put("/{endpoint}")
    async def put_endpoint(endpoint: str, body: EndpointIn) -> EndpointPublic:
        return public(await core.put_endpoint(to_spec(endpoint, body)))

    @api.get("/{endpoint}")
    async def get_endpoint(endpoint: str) -> EndpointStatePublic:
        return public_state(await core.state(endpoint))

    @api.post("/{endpoint}/predict")
    async def predict(endpoint: str, body: PredictIn) -> PredictOut:
        result = await core.predict(endpoint, body.unit_id, body.entity_id, body.features)
        return PredictOut(
            prediction_id=result.prediction_id,
            model=result.model,
            version=result.version,
            outputs=result.outputs,
            variant=result.variant,
        )

    return api
