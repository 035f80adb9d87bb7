"""REST transport of the bandit router: ``/v1/endpoints`` (specs and live state) and ``.../predict``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.bandit_router.core import Router
from services.bandit_router.spec import EndpointSpec, PolicySpec, VariantSpec
from services.bandit_router.state import EndpointState


class VariantBase(BaseModel):
    model: str
    alias: str | None = Field(None, description="e.g. production, candidate (default production).")
    weight: float = Field(
        1.0, ge=0, description="Relative share of traffic (fixed, sticky); 0 pauses the variant under any policy."
    )


class VariantIn(VariantBase):
    name: str | None = Field(None, description="Default: model:version or model@alias.")
    version: str | int | None = Field(None, description="A registry version; or give alias.")


class VariantPublic(VariantBase):
    name: str
    version: str | None = None


class PolicyModel(BaseModel):
    type: str = Field(
        "fixed", description="fixed, sticky, canary, shadow, epsilon_greedy, ucb1, thompson or linucb."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="See docs/bandit-router.md.")


class EndpointIn(BaseModel):
    variants: list[VariantIn] = Field(min_length=1)
    policy: PolicyModel = Field(default_factory=PolicyModel)


class EndpointPublic(BaseModel):
    endpoint: str
    variants: list[VariantPublic]
    policy: PolicyModel
    revision: int = Field(0, description="Bumped on every change (PUTs, arms added, promotions, rollbacks).")


class EndpointList(BaseModel):
    endpoints: list[EndpointPublic]


class VariantStatePublic(VariantPublic):
    role: str = Field(description="live, shadow (mirrored only) or paused (weight 0, rolled back).")
    decisions: int
    traffic_share: float = Field(description="Fraction of the endpoint's decisions this variant served.")
    target_share: float | None = Field(
        None, description="The share the policy gives it now (Thompson: P(best)); null when context-dependent."
    )
    rewards: int
    pending: int = Field(description="Decisions still waiting for their reward.")
    expired: int = Field(description="Decisions whose reward never came within the reward timeout.")
    reward_mean: float | None
    reward_ci_low: float | None = Field(None, description="95% interval (Wilson for 0/1 rewards, else Student t).")
    reward_ci_high: float | None
    prob_best: float | None = Field(None, description="P(highest mean reward) among the live variants.")
    regret: float | None = Field(None, description="Decisions x (best estimated mean - this mean).")
    errors: int
    error_rate: float | None
    p50_ms: float | None = Field(None, description="Latency of its inference calls (histogram bucket bound).")
    p99_ms: float | None
    shadows: int = Field(description="Mirrored requests it answered (shadow variants).")
    shadow_errors: int


class EventPublic(BaseModel):
    time: float = Field(description="Unix time.")
    at: str = Field(description="ISO 8601 time (UTC).")
    kind: str = Field(description="created, updated, arm_added, arm_removed, promoted, rolled_back.")
    details: dict[str, Any]


class EndpointStatePublic(BaseModel):
    endpoint: str
    policy: PolicyModel
    status: str = Field(description="running, promoted or rolled_back.")
    revision: int
    decisions: int
    rewards: int
    regret: float | None = Field(None, description="Estimated cumulative regret of the experiment so far.")
    late_rewards: int = Field(description="Rewards that came after their decision expired (not counted).")
    stale_rewards: int = Field(description="Rewards for a variant reset since the decision (not counted).")
    variants: list[VariantStatePublic]
    events: list[EventPublic]


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
        revision=spec.revision,
    )


def public_state(state: EndpointState) -> EndpointStatePublic:
    variants = []
    for vs in state.variants:
        s = vs.stats
        ci = s.ci95()
        variants.append(
            VariantStatePublic(
                **_variant(vs.spec),
                role=vs.role,
                decisions=s.decisions,
                traffic_share=vs.traffic_share,
                target_share=vs.target_share,
                rewards=s.rewards,
                pending=s.pending,
                expired=s.expired,
                reward_mean=s.mean,
                reward_ci_low=ci[0] if ci else None,
                reward_ci_high=ci[1] if ci else None,
                prob_best=vs.probability_best,
                regret=vs.regret,
                errors=s.errors,
                error_rate=s.error_rate,
                p50_ms=s.latency_ms(0.5),
                p99_ms=s.latency_ms(0.99),
                shadows=s.shadows,
                shadow_errors=s.shadow_errors,
            )
        )
    return EndpointStatePublic(
        endpoint=state.spec.endpoint,
        policy=PolicyModel(type=state.spec.policy.type, params=dict(state.spec.policy.params)),
        status=state.status,
        revision=state.spec.revision,
        decisions=sum(v.stats.decisions for v in state.variants),
        rewards=sum(v.stats.rewards for v in state.variants),
        regret=state.regret,
        late_rewards=state.counters.late,
        stale_rewards=state.counters.stale,
        variants=variants,
        events=[
            EventPublic(time=e["time"], at=_iso(e["time"]), kind=e["kind"], details=e.get("details") or {})
            for e in state.events
        ],
    )


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds")


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
