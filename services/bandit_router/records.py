"""The ``Prediction`` record the router publishes for each answer, served or shadow."""

from __future__ import annotations

import time

from google.protobuf import timestamp_pb2

from mlops.v1 import events_pb2
from services.bandit_router.clients import Signature


def prediction_record(
    prediction_id: str,
    endpoint: str,
    variant: str,
    signature: Signature,
    row: list[float],
    outputs: list[float],
    unit_id: str | None,
    entity_id: str | None,
    *,
    shadow: bool = False,
    latency_ms: float = 0.0,
) -> events_pb2.Prediction:
    ns = time.time_ns()
    return events_pb2.Prediction(
        prediction_id=prediction_id,
        endpoint=endpoint,
        variant=variant,
        model=signature.model,
        version=signature.version,
        entity_id=entity_id or "",
        unit_id=unit_id or "",
        features=dict(zip(signature.features, row, strict=True)),
        outputs=outputs,
        time=timestamp_pb2.Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000),
        shadow=shadow,
        latency_ms=latency_ms,
    )
