"""Shadow traffic: after the live answer is ready, a copy of the request goes to each shadow variant in
a background task. The caller never waits for it and never sees its result or its failure: the task is
started after the response is complete and only logs a ``Prediction`` with ``shadow=true`` (prediction
id ``<live id>.<variant>``) for offline comparison, and counts it (or its error) in the statistics.

At most ``max_inflight`` mirrors run per process; beyond that a mirror is dropped and counted, so a
slow shadow model cannot pile up memory or starve the live path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mlops.v1 import events_pb2
from services.bandit_router import metrics
from services.bandit_router.clients import Signature
from services.bandit_router.policies import Policy, unit_point
from services.bandit_router.records import prediction_record
from services.bandit_router.spec import EndpointSpec, VariantSpec
from services.bandit_router.store import RouterStore

log = logging.getLogger(__name__)

Serve = Callable[[VariantSpec, dict[str, Any], str | None], Awaitable[tuple[Signature, list[float], list[float]]]]
Publish = Callable[[events_pb2.Prediction], Awaitable[None]]


class Mirror:
    """Runs shadow requests in the background."""

    def __init__(
        self, serve: Serve, publish: Publish, store: RouterStore, max_inflight: int, rng: random.Random
    ) -> None:
        self._serve = serve
        self._publish = publish
        self._store = store
        self._max_inflight = max_inflight
        self._rng = rng
        self.tasks: set[asyncio.Task[None]] = set()

    def wanted(self, endpoint: str, policy: Policy, unit_id: str | None) -> bool:
        """Whether this request is in the mirrored fraction (the same units every time, given a unit_id)."""
        fraction = policy.experiment.shadow_fraction
        if fraction >= 1.0:
            return True
        point = unit_point(endpoint, unit_id, "shadow") if unit_id else self._rng.random()
        return point < fraction

    def maybe(
        self,
        endpoint: str,
        spec: EndpointSpec,
        policy: Policy,
        prediction_id: str,
        given: dict[str, Any],
        entity_id: str | None,
        unit_id: str | None,
    ) -> int:
        """Start the mirrors of one answered request; returns how many were started. Never raises."""
        shadows = policy.shadow_indexes(spec.variants)
        if not shadows or not self.wanted(endpoint, policy, unit_id):
            return 0
        started = 0
        for i in shadows:
            variant = spec.variants[i]
            if len(self.tasks) >= self._max_inflight:
                metrics.SHADOW_DROPPED.labels(endpoint, variant.name).inc()
                continue
            task = asyncio.create_task(self._run(endpoint, variant, prediction_id, dict(given), entity_id, unit_id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            started += 1
        return started

    async def _run(
        self,
        endpoint: str,
        variant: VariantSpec,
        prediction_id: str,
        given: dict[str, Any],
        entity_id: str | None,
        unit_id: str | None,
    ) -> None:
        start = time.perf_counter()
        try:
            signature, row, outputs = await self._serve(variant, given, entity_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics.SHADOWS.labels(endpoint, variant.name, "error").inc()
            log.debug("shadow %s of %s failed: %r", variant.name, endpoint, exc)
            await self._quietly(self._store.record_errors(endpoint, [variant.name], shadow=True))
            return
        record = prediction_record(f"{prediction_id}.{variant.name}", endpoint, variant.name, signature, row,
                                   outputs, unit_id, entity_id, shadow=True,
                                   latency_ms=(time.perf_counter() - start) * 1000.0)
        metrics.SHADOWS.labels(endpoint, variant.name, "ok").inc()
        await self._quietly(self._store.record_shadow(endpoint, variant.name))
        await self._quietly(self._publish(record))

    @staticmethod
    async def _quietly(step: Awaitable[None]) -> None:
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("recording a shadow prediction failed")

    async def drain(self, timeout_s: float) -> None:
        """Let running mirrors finish (up to ``timeout_s``), then cancel the rest."""
        if not self.tasks:
            return
        _, pending = await asyncio.wait(set(self.tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
