"""REST adapter: ``POST /v1/feedback`` (one object or a list), ``GET /v1/quality/{model}/{version}`` and
``GET /v1/feedback/stats``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mlops import json_input
from mlops.errors import InvalidArgument
from mlops.v1 import events_pb2
from services.feedback import metrics
from services.feedback.core import FeedbackCore


class FeedbackIn(BaseModel):
    """One outcome for a served prediction; at least one of label, reward, value."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: str = Field(min_length=1, max_length=256)
    label: float | None = Field(None, allow_inf_nan=False, description="Observed class id.")
    reward: float | None = Field(None, allow_inf_nan=False, description="Reward for the router, as is.")
    value: float | None = Field(None, allow_inf_nan=False, description="Business value (the reward if none).")

    def to_proto(self) -> events_pb2.Feedback:
        fb = events_pb2.Feedback(prediction_id=self.prediction_id)
        for name in ("label", "reward", "value"):
            if (v := getattr(self, name)) is not None:
                setattr(fb, name, v)
        return fb


class Accepted(BaseModel):
    accepted: int


class QualityOut(BaseModel):
    model: str
    version: str
    count: int
    labeled: int
    accuracy: float | None
    reward_mean: float | None
    value_count: int
    value_mean: float | None
    log_loss: float | None
    calibration_error: float | None


_ONE = TypeAdapter(FeedbackIn)
_MANY = TypeAdapter(list[FeedbackIn])


def parse_body(payload: Any) -> tuple[list[FeedbackIn], str | None]:
    """A JSON object or list as feedback items, with the batch field for error paths (see ``submit``)."""
    if isinstance(payload, list):
        adapter, batch_field = _MANY, ""
    elif isinstance(payload, dict):
        adapter, batch_field = _ONE, None
    else:
        raise InvalidArgument("body must be a feedback object or a list of them", field="body")
    try:
        parsed = adapter.validate_python(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidArgument(f"{field}: {first['msg']}", field=field) from exc
    return (parsed if isinstance(parsed, list) else [parsed]), batch_field


_ONE_SCHEMA = FeedbackIn.model_json_schema()
_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "One feedback object or a list of them.",
        "content": {"application/json": {"schema": {"anyOf": [_ONE_SCHEMA, {"type": "array", "items": _ONE_SCHEMA}]}}},
    }
}


def router(core: FeedbackCore) -> APIRouter:
    api = APIRouter(tags=["feedback"])

    @api.post("/v1/feedback", status_code=202, response_model=Accepted, openapi_extra=_BODY_DOC)
    async def post_feedback(request: Request) -> Accepted:
        """Outcomes for served predictions, produced to ``feedback.raw`` (one outcome per prediction counts)."""
        # Bounded: nesting past any sane depth or an integer too long to convert is a 400, not a 500.
        payload = json_input.loads(await request.body())
        items, batch_field = parse_body(payload)
        n = await core.submit([i.to_proto() for i in items], batch_field=batch_field)
        metrics.FEEDBACK_ACCEPTED.labels("http").inc(n)
        return Accepted(accepted=n)

    @api.get("/v1/quality/{model}/{version}", response_model=QualityOut)
    async def get_quality(model: str, version: str) -> QualityOut:
        return QualityOut(**(await core.quality(model, version)).to_dict())  # type: ignore[arg-type]

    @api.get("/v1/feedback/stats")
    async def get_stats() -> dict[str, int]:
        """Join counters: held (unmatched on arrival), joined, duplicates, expired, pending now."""
        return await core.store.stats()

    return api
