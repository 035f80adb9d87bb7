"""Kafka adapter: ``training.requests`` -> one training job per request (idempotent by request and event id).

A request with empty stream/features/label (the drift service's retraining policy sends those) trains
"as the current production version was trained"; ``recent_rows`` limits the dataset to the newest rows.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from mlops.bus.envelope import Envelope
from mlops.v1 import events_pb2
from services.trainer.core import Trainer
from services.trainer.jobs import JobSpec

log = logging.getLogger(__name__)


def on_training_request(trainer: Trainer) -> Callable[[Envelope], Awaitable[None]]:
    async def handle(env: Envelope) -> None:
        req = env.decode(events_pb2.TrainingRequest)
        spec = JobSpec(
            model=req.model,
            stream=req.stream,
            features=list(req.features),
            label=req.label,
            stage=req.stage or "candidate",
            epochs=req.epochs,
            seed=req.seed or trainer.settings.default_seed,
            reason=req.reason,
            recent_rows=req.recent_rows,
        )
        # A bad request raises InvalidArgument, which the consumer sends to the dead-letter topic.
        job = await trainer.submit(spec, request_id=req.request_id or env.event_id, event_id=env.event_id)
        log.info("training request %s -> job %s (%s)", req.request_id or env.event_id, job.id, job.state)

    return handle
