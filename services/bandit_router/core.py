"""The router's logic, shared by REST, gRPC and the rewards consumer.

``predict``: read the endpoint's spec (briefly cached), let its policy pick a variant, resolve the
variant to a model version and its signature (registry, cached), assemble the feature row in signature
order (request values first, the online store for the rest), call inference, count the decision and
publish a ``Prediction``. ``state``: the spec with live per-variant statistics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from google.protobuf import timestamp_pb2

from mlops.bus import topics
from mlops.bus.producer import Producer
from mlops.errors import InvalidArgument, NotFound
from mlops.v1 import events_pb2
from services.bandit_router import metrics
from services.bandit_router import spec as specs
from services.bandit_router.clients import (
    FALLBACK_ERRORS,
    FeatureLookup,
    InferenceCaller,
    RegistryLookup,
    Signature,
)
from services.bandit_router.policies import Policy
from services.bandit_router.settings import RouterSettings
from services.bandit_router.spec import EndpointSpec, VariantSpec
from services.bandit_router.stats import VariantStats, probability_best, traffic_shares
from services.bandit_router.store import RouterStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PredictResult:
    prediction_id: str
    model: str
    version: str
    outputs: list[float]
    variant: str


@dataclass(frozen=True, slots=True)
class VariantState:
    spec: VariantSpec
    stats: VariantStats
    traffic_share: float
    probability_best: float | None


@dataclass(frozen=True, slots=True)
class EndpointState:
    spec: EndpointSpec
    variants: list[VariantState]


def feature_value(name: str, value: Any) -> float:
    """A feature as a float: numbers and booleans; anything else is an InvalidArgument naming it."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    raise InvalidArgument(f"feature '{name}' must be a finite number, got {value!r}", field=f"features.{name}")


def feature_row(
    signature: Signature, given: dict[str, Any], stored: dict[str, Any], entity_id: str | None
) -> list[float]:
    """Values of the signature's features in order: from the request, else the online store."""
    row: list[float] = []
    for name in signature.features:
        if name in given:
            row.append(feature_value(name, given[name]))
        elif name in stored:
            row.append(feature_value(name, stored[name]))
        else:
            where = f" (not in the online store for entity '{entity_id}')" if entity_id else ""
            raise InvalidArgument(
                f"missing feature '{name}' for {signature.model}:{signature.version}{where}",
                field=f"features.{name}",
            )
    return row


class Router:
    """Endpoint specs, variant choice, predictions and reward statistics."""

    def __init__(
        self,
        store: RouterStore,
        registry: RegistryLookup,
        features: FeatureLookup,
        inference: InferenceCaller,
        producer: Producer | None,
        settings: RouterSettings,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._features = features
        self._inference = inference
        self._producer = producer
        self._settings = settings
        self._rng = rng or random.Random()
        self._specs: dict[str, tuple[float, EndpointSpec, Policy]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # -- specs ---------------------------------------------------------------------------------------
    async def put_endpoint(self, spec: EndpointSpec) -> EndpointSpec:
        spec = specs.validate(spec)
        policy = Policy.create(spec.policy.type, spec.policy.params)
        previous = await self._store.get_spec(spec.endpoint)
        old = {v.name: v.target for v in previous.variants} if previous else {}
        reset = [v.name for v in spec.variants if v.name in old and old[v.name] != v.target]
        await self._store.put_spec(spec, reset_variants=reset)
        self._specs[spec.endpoint] = (time.monotonic() + self._settings.spec_cache_ttl_s, spec, policy)
        return spec

    async def _spec(self, endpoint: str) -> tuple[EndpointSpec, Policy]:
        hit = self._specs.get(endpoint)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1], hit[2]
        spec = await self._store.get_spec(endpoint)
        if spec is None:
            self._specs.pop(endpoint, None)
            raise NotFound(f"endpoint '{endpoint}' does not exist", field="endpoint")
        policy = Policy.create(spec.policy.type, spec.policy.params)
        self._specs[endpoint] = (time.monotonic() + self._settings.spec_cache_ttl_s, spec, policy)
        return spec, policy

    async def list_endpoints(self) -> list[EndpointSpec]:
        return await self._store.list_specs()

    async def state(self, endpoint: str) -> EndpointState:
        spec = await self._store.get_spec(endpoint)
        if spec is None:
            raise NotFound(f"endpoint '{endpoint}' does not exist", field="endpoint")
        stats = await self._store.stats(endpoint, [v.name for v in spec.variants])
        shares = traffic_shares(stats)
        best = probability_best(stats)
        return EndpointState(
            spec=spec,
            variants=[
                VariantState(v, s, share, p) for v, s, share, p in zip(spec.variants, stats, shares, best, strict=True)
            ],
        )

    # -- predictions ---------------------------------------------------------------------------------
    async def _resolve(self, variant: VariantSpec) -> Signature:
        if variant.version:
            return await self._registry.signature(variant.model, variant.version)
        return await self._registry.resolve(variant.model, variant.alias)

    async def _serve(
        self, variant: VariantSpec, given: dict[str, Any], entity_id: str | None
    ) -> tuple[Signature, list[float], list[float]]:
        """Resolve the variant, assemble its feature row and run it: ``(signature, row, outputs)``."""
        signature = await self._resolve(variant)
        missing = [f for f in signature.features if f not in given]
        stored = await self._features.online(entity_id, missing) if missing and entity_id else {}
        row = feature_row(signature, given, stored, entity_id)
        return signature, row, await self._inference.infer(signature, row)

    async def predict(
        self,
        endpoint: str,
        unit_id: str | None = None,
        entity_id: str | None = None,
        features: dict[str, Any] | None = None,
    ) -> PredictResult:
        start = time.perf_counter()
        spec, policy = await self._spec(endpoint)
        given = dict(features or {})
        if not given and not entity_id:
            raise InvalidArgument("give features, an entity_id, or both", field="features")
        stats = await self._store.stats(endpoint, [v.name for v in spec.variants]) if policy.uses_stats else None
        candidates = list(range(len(spec.variants)))
        while True:
            pool = [spec.variants[i] for i in candidates]
            pool_stats = [stats[i] for i in candidates] if stats is not None else None
            pick = policy.choose(endpoint, pool, pool_stats, unit_id or None, self._rng)
            variant = pool[pick]
            try:
                signature, row, outputs = await self._serve(variant, given, entity_id)
                break
            except FALLBACK_ERRORS as exc:
                # The variant cannot serve now (alias points nowhere, version not loaded yet): another one
                # answers instead, so a half-configured endpoint degrades instead of failing requests.
                metrics.FALLBACKS.labels(endpoint, variant.name).inc()
                del candidates[pick]
                if not any(spec.variants[i].weight > 0 for i in candidates):
                    raise
                log.debug("variant %s of %s unservable (%s); falling back", variant.name, endpoint, exc)
        latency_ms = (time.perf_counter() - start) * 1000.0

        prediction_id = uuid.uuid4().hex
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        record = events_pb2.Prediction(
            prediction_id=prediction_id,
            endpoint=endpoint,
            variant=variant.name,
            model=signature.model,
            version=signature.version,
            entity_id=entity_id or "",
            unit_id=unit_id or "",
            features=dict(zip(signature.features, row, strict=True)),
            outputs=outputs,
            time=now,
            latency_ms=latency_ms,
        )
        metrics.DECISIONS.labels(endpoint, variant.name).inc()
        counted = self._store.count_decision(endpoint, variant.name)
        if self._producer is None:
            await counted
        elif self._settings.await_publish:
            await asyncio.gather(counted, self._publish(record))
        else:
            task = asyncio.create_task(self._publish(record))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            await counted
        return PredictResult(prediction_id, signature.model, signature.version, outputs, variant.name)

    async def _publish(self, record: events_pb2.Prediction) -> None:
        assert self._producer is not None
        try:
            await self._producer.send(
                topics.PREDICTIONS, record, key=record.prediction_id, event_id=f"prediction:{record.prediction_id}"
            )
        except Exception:
            if self._settings.await_publish:
                raise
            log.exception("publishing prediction %s failed", record.prediction_id)

    async def drain(self) -> None:
        """Wait for predictions still being published in the background (on stop)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- rewards -------------------------------------------------------------------------------------
    async def record_reward(self, event_id: str, reward: events_pb2.Reward) -> bool:
        """Count ``reward`` once per ``event_id``; False for a duplicate."""
        return await self._store.apply_reward(event_id, reward.endpoint, reward.variant, reward.reward)
