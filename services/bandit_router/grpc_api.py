"""gRPC transport of the bandit router: ``mlops.v1.BanditRouterService``, a thin adapter over :class:`Router`."""

from __future__ import annotations

import math
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from mlops.v1 import bandit_router_pb2 as pb
from mlops.v1 import bandit_router_pb2_grpc
from services.bandit_router.core import Router
from services.bandit_router.spec import EndpointSpec
from services.bandit_router.state import EndpointState


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def state_to_proto(state: EndpointState) -> pb.EndpointState:
    """Live state; statistics not yet defined (no rewards, or one for the interval) are NaN."""
    variants = []
    for vs in state.variants:
        ci = vs.stats.ci95()
        variants.append(
            pb.VariantState(
                name=vs.spec.name,
                model=vs.spec.model,
                version=vs.spec.version,
                alias=vs.spec.alias,
                weight=vs.spec.weight,
                decisions=vs.stats.decisions,
                traffic_share=vs.traffic_share,
                rewards=vs.stats.rewards,
                reward_mean=_nan(vs.stats.mean),
                reward_ci_low=ci[0] if ci else math.nan,
                reward_ci_high=ci[1] if ci else math.nan,
                prob_best=_nan(vs.probability_best),
                regret=_nan(vs.regret),
            )
        )
    return pb.EndpointState(spec=state.spec.to_proto(), variants=variants)


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A ``Struct`` as a dict: numbers, booleans and strings read directly (json_format's generic walk cost
    more than the rest of the request's parsing), anything else through json_format."""
    out: dict[str, Any] = {}
    for key, value in struct.fields.items():
        kind = value.WhichOneof("kind")
        if kind == "number_value":
            out[key] = value.number_value
        elif kind == "bool_value":
            out[key] = value.bool_value
        elif kind == "string_value":
            out[key] = value.string_value
        else:
            out[key] = json_format.MessageToDict(value)
    return out


class Servicer(bandit_router_pb2_grpc.BanditRouterServiceServicer):
    def __init__(self, core: Router) -> None:
        self._core = core

    async def PutEndpoint(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return (await self._core.put_endpoint(EndpointSpec.from_proto(request))).to_proto()

    async def GetEndpoint(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return state_to_proto(await self._core.state(request.endpoint))

    async def ListEndpoints(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ListEndpointsResponse(endpoints=[s.to_proto() for s in await self._core.list_endpoints()])

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        features = struct_to_dict(request.features) if request.HasField("features") else None
        result = await self._core.predict(
            request.endpoint, request.unit_id or None, request.entity_id or None, features
        )
        return pb.PredictResponse(
            prediction_id=result.prediction_id,
            model=result.model,
            version=result.version,
            outputs=result.outputs,
            variant=result.variant,
        )
