"""The router's logic, shared by REST, gRPC and the Kafka consumers.

``predict``: read the endpoint's spec (briefly cached), let its policy pick among the live variants
(from the statistics every replica shares in Redis, and for LinUCB the request's context), resolve the
variant to a model version and its signature (registry, cached), assemble the feature row in signature
order (request values first, the online store for the rest), call inference, record the decision (it
waits for its reward in Redis), publish a ``Prediction`` keyed ``model:version``, and mirror the request
to shadow variants in the background. A variant that cannot serve counts an error and another answers.

``update_endpoint`` is the one way specs change (users' PUTs, arms added, promotions, rollbacks): a
compare-and-set on the spec's revision, retried on conflict, with the statistic resets and events of the
change applied in the same atomic step.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from mlops.bus import topics
from mlops.bus.journal import Journal, JournalRecord
from mlops.bus.producer import Producer
from mlops.errors import Conflict, InvalidArgument, NotFound
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
from services.bandit_router.outbox import Outbox, prediction_event_id, prediction_key
from services.bandit_router.policies import Arms, LinUCBPolicy, Policy
from services.bandit_router.records import prediction_record
from services.bandit_router.settings import RouterSettings
from services.bandit_router.shadow import Mirror
from services.bandit_router.spec import EndpointSpec, VariantSpec
from services.bandit_router.state import EndpointState, build_state
from services.bandit_router.stats import VariantStats, latency_bucket
from services.bandit_router.store import Event, RouterStore

log = logging.getLogger(__name__)

#: A change to a spec: the new spec, the variants whose statistics restart, and the events it records;
#: None when there is nothing to change.
Change = tuple[EndpointSpec, list[str], list[Event]]
Changer = Callable[[EndpointSpec | None], Change | None]


@dataclass(frozen=True, slots=True)
class PredictResult:
    prediction_id: str
    model: str
    version: str
    outputs: list[float]
    variant: str


@dataclass(slots=True)
class _Cached:
    expires: float
    spec: EndpointSpec
    policy: Policy
    extras: dict[str, Any] = field(default_factory=dict)
    refreshing: bool = False


@dataclass(slots=True)
class _CachedStats:
    fresh_until: float
    usable_until: float
    names: list[str]
    stats: list[VariantStats]
    refreshing: bool = False


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


def user_change(new: EndpointSpec) -> Changer:
    """A user's PUT: replace the spec; variants retargeted or removed restart their statistics."""

    def change(current: EndpointSpec | None) -> Change:
        if current is None:
            return new, [], [Event.now("created", variants=[v.name for v in new.variants], policy=new.policy.type)]
        old = {v.name: v.target for v in current.variants}
        names = {v.name for v in new.variants}
        reset = [v.name for v in new.variants if v.name in old and old[v.name] != v.target]
        reset += [n for n in old if n not in names]
        event = Event.now("updated", variants=[v.name for v in new.variants], policy=new.policy.type, reset=reset)
        return new, reset, [event]

    return change


class Router:
    """Endpoint specs, variant choice, predictions, rewards and live state."""

    def __init__(
        self,
        store: RouterStore,
        registry: RegistryLookup,
        features: FeatureLookup,
        inference: InferenceCaller,
        producer: Producer | None,
        settings: RouterSettings,
        rng: random.Random | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self._features = features
        self._inference = inference
        self._producer = producer
        self.settings = settings
        self._rng = rng or random.Random()
        self._specs: dict[str, _Cached] = {}
        self._stats: dict[str, _CachedStats] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.outbox = Outbox(
            self._publish if producer is not None else None, store, settings.publish_linger_s,
            settings.publish_max_records, settings.inference_timeout_s, settings.latency_flush_s, journal,
        )
        self.mirror = Mirror(self._serve, self.outbox.put, store, settings.shadow_max_inflight, self._rng)

    # -- specs ---------------------------------------------------------------------------------------
    @staticmethod
    def checked_policy(spec: EndpointSpec) -> Policy:
        policy = Policy.create(spec.policy.type, spec.policy.params)
        policy.check_variants(spec.variants)
        return policy

    async def put_endpoint(self, spec: EndpointSpec) -> EndpointSpec:
        spec = specs.validate(spec)
        self.checked_policy(spec)
        stored = await self.update_endpoint(spec.endpoint, user_change(spec))
        assert stored is not None
        return stored

    async def update_endpoint(self, endpoint: str, changer: Changer, attempts: int = 20) -> EndpointSpec | None:
        """Apply ``changer`` to the current spec by compare-and-set; the stored spec, or None if no change."""
        for _ in range(attempts):
            current = await self.store.get_spec(endpoint)
            change = changer(current)
            if change is None:
                return None
            new, reset, events = change
            new = specs.validate(replace(new, endpoint=endpoint))
            policy = self.checked_policy(new)
            expected = current.revision if current else 0
            clear_linear = isinstance(policy, LinUCBPolicy) and not _same_context(current, new)
            revision = await self.store.put_spec(new, expected, reset, events, clear_linear=clear_linear)
            if revision is not None:
                stored = replace(new, revision=revision)
                self._remember(stored, policy)
                return stored
            await asyncio.sleep(self._rng.uniform(0.0, 0.01))  # another writer won: read again
        raise Conflict(f"endpoint '{endpoint}' is being changed concurrently; try again", field="endpoint")

    def _remember(self, spec: EndpointSpec, policy: Policy, read_at: float | None = None) -> _Cached:
        cached = _Cached((read_at or time.monotonic()) + self.settings.spec_cache_ttl_s, spec, policy)
        self._specs[spec.endpoint] = cached
        return cached

    async def _cached(self, endpoint: str) -> _Cached:
        hit = self._specs.get(endpoint)
        if hit is not None:
            now = time.monotonic()
            if hit.expires > now:
                return hit
            if hit.expires + self.settings.cache_refresh_grace_s > now:
                # Just expired: answer from it once more while one read refreshes it in the background, so
                # no request waits for the spec's round trip to Redis.
                if not hit.refreshing:
                    hit.refreshing = True
                    self._spawn(self._refresh_spec(endpoint, hit))
                return hit
        return await self._read_spec(endpoint)

    async def _read_spec(self, endpoint: str) -> _Cached:
        read_at = time.monotonic()
        spec = await self.store.get_spec(endpoint)
        if spec is None:
            self._specs.pop(endpoint, None)
            raise NotFound(f"endpoint '{endpoint}' does not exist", field="endpoint")
        current = self._specs.get(endpoint)
        if current is not None and current.spec.revision > spec.revision:
            return current  # this process wrote a newer one meanwhile
        return self._remember(spec, Policy.create(spec.policy.type, spec.policy.params), read_at)

    async def _refresh_spec(self, endpoint: str, hit: _Cached) -> None:
        try:
            await self._read_spec(endpoint)
        except NotFound:
            pass  # deleted: the next request reads again and answers 404
        except Exception:
            log.warning("refreshing the spec of %s failed", endpoint, exc_info=True)
        finally:
            hit.refreshing = False

    async def spec_and_policy(self, endpoint: str, fresh: bool = False) -> tuple[EndpointSpec, Policy]:
        if fresh:
            self._specs.pop(endpoint, None)
        cached = await self._cached(endpoint)
        return cached.spec, cached.policy

    async def list_endpoints(self) -> list[EndpointSpec]:
        return await self.store.list_specs()

    async def state(self, endpoint: str) -> EndpointState:
        spec = await self.store.get_spec(endpoint)
        if spec is None:
            raise NotFound(f"endpoint '{endpoint}' does not exist", field="endpoint")
        policy = Policy.create(spec.policy.type, spec.policy.params)
        stats = await self.store.stats(endpoint, [v.name for v in spec.variants], latency=True)
        counters = await self.store.counters(endpoint)
        events = await self.store.events(endpoint)
        return build_state(spec, policy, stats, counters, events)

    # -- predictions ---------------------------------------------------------------------------------
    async def resolve(self, variant: VariantSpec) -> Signature:
        if variant.version:
            return await self.registry.signature(variant.model, variant.version)
        return await self.registry.resolve(variant.model, variant.alias)

    async def _serve(
        self, variant: VariantSpec, given: dict[str, Any], entity_id: str | None
    ) -> tuple[Signature, list[float], list[float]]:
        """Resolve the variant, assemble its feature row and run it: ``(signature, row, outputs)``."""
        signature = await self.resolve(variant)
        missing = [f for f in signature.features if f not in given]
        stored = await self._features.online(entity_id, missing) if missing and entity_id else {}
        row = feature_row(signature, given, stored, entity_id)
        return signature, row, await self._inference.infer(signature, row)

    async def _context(self, policy: LinUCBPolicy, given: dict[str, Any], entity_id: str | None) -> dict[str, Any]:
        """The request's features plus the context features it lacks, read from the online store."""
        missing = [f for f in policy.features if f not in given]
        if missing and entity_id:
            given = {**await self._features.online(entity_id, missing), **given}
        return given

    async def predict(
        self,
        endpoint: str,
        unit_id: str | None = None,
        entity_id: str | None = None,
        features: dict[str, Any] | None = None,
    ) -> PredictResult:
        start = time.perf_counter()
        spec, policy = await self.spec_and_policy(endpoint)
        given = dict(features or {})
        if not given and not entity_id:
            raise InvalidArgument("give features, an entity_id, or both", field="features")
        live = [spec.variants[i] for i in policy.live(spec.variants)]
        names = [v.name for v in live]
        stats = await self._live_stats(endpoint, names) if policy.uses_stats else [VariantStats()] * len(live)
        context = linear = None
        if isinstance(policy, LinUCBPolicy):
            given = await self._context(policy, given, entity_id)
            context = policy.context(given)
            linear = await self.store.linear(endpoint, names, policy.dim)

        timeout = policy.experiment.reward_timeout_s or self.settings.reward_timeout_s
        deadline = time.time() + timeout
        context_list = context.tolist() if context is not None else None
        prediction_id = uuid.uuid4().hex
        candidates = list(range(len(live)))
        failed: list[str] = []
        while True:
            arms = Arms(
                endpoint,
                [live[i] for i in candidates],
                [stats[i] for i in candidates],
                unit_id or None,
                context,
                [linear[i] for i in candidates] if linear is not None else None,
            )
            pick = candidates[policy.pick(arms, self._rng)]
            variant = live[pick]
            served_at = time.perf_counter()
            serving = asyncio.ensure_future(self._serve(variant, given, entity_id))
            decision: asyncio.Future[None] | None = None
            try:
                # One turn of the event loop first: the inference call's own task sends the request before
                # anything below uses the loop, so their work is not on this request's path.
                await asyncio.sleep(0)
                if not serving.done():  # (done already: bad input or an unservable variant, no call made)
                    # The decision goes to Redis while inference runs (its round trip hides behind the
                    # model's); it is taken back if this variant fails to serve.
                    decision = asyncio.ensure_future(self.store.record_decision(
                        endpoint, variant.name, prediction_id, None, deadline, context_list))
                    self.outbox.kick()  # earlier predictions' records go out while this one waits
                signature, row, outputs = await serving
                break
            except FALLBACK_ERRORS as exc:
                # The variant cannot serve now (alias points nowhere, version not loaded, inference failed):
                # another one answers, so a half-configured endpoint degrades instead of failing requests.
                if decision is not None:
                    await self._withdraw(decision, endpoint, prediction_id)
                metrics.FALLBACKS.labels(endpoint, variant.name).inc()
                failed.append(variant.name)
                candidates.remove(pick)
                log.debug("variant %s of %s failed (%s); falling back", variant.name, endpoint, exc)
                if not candidates:
                    await self.store.record_errors(endpoint, failed)
                    raise
            except BaseException:
                # Bad input, a peer down, or the caller gone: no prediction, so no decision either.
                serving.cancel()
                if decision is not None:
                    self._spawn(self._withdraw(decision, endpoint, prediction_id))
                raise
        now = time.perf_counter()
        serve_ms = (now - served_at) * 1000.0
        latency_ms = (now - start) * 1000.0

        record = prediction_record(prediction_id, endpoint, variant.name, signature, row, outputs, unit_id, entity_id)
        record.latency_ms = latency_ms
        metrics.decisions(endpoint, variant.name).inc()
        if policy.uses_stats:
            self._count_locally(endpoint, variant.name)
        self.outbox.count_latency(endpoint, variant.name, latency_bucket(serve_ms))
        if failed:
            self._spawn(self._quietly(self.store.record_errors(endpoint, failed), "counting fallback errors"))
        # The decision is in Redis before the answer: a reward can always find it.
        if decision is None:  # answered within that first turn (in-process stand-ins do): record it now
            decision = asyncio.ensure_future(self.store.record_decision(
                endpoint, variant.name, prediction_id, None, deadline, context_list))
        await decision
        if self._producer is not None:
            if self.settings.await_publish:
                await self._publish(record)
            else:
                await self.outbox.put(record)
        self.mirror.maybe(endpoint, spec, policy, prediction_id, given, entity_id, unit_id)
        return PredictResult(prediction_id, signature.model, signature.version, outputs, variant.name)

    async def _withdraw(self, decision: asyncio.Future[None], endpoint: str, prediction_id: str) -> None:
        """Take back a decision recorded (or being recorded) for a variant that did not answer."""
        try:
            await asyncio.shield(decision)
        except Exception:
            return  # it was never recorded
        await self._quietly(self.store.withdraw_decision(endpoint, prediction_id), "taking back a decision")

    @staticmethod
    async def _quietly(step: Awaitable[Any], what: str) -> None:
        try:
            await step
        except Exception:
            log.exception("%s failed", what)

    async def _live_stats(self, endpoint: str, names: list[str]) -> list[VariantStats]:
        """The variants' shared statistics, reused for ``stats_cache_ttl_s`` (plus this process's decisions),
        then refreshed in the background while requests go on deciding from them (for at most
        ``cache_refresh_grace_s`` more; after that a request reads them itself)."""
        hit = self._stats.get(endpoint)
        if hit is not None and hit.names == names:
            now = time.monotonic()
            if hit.fresh_until > now:
                return list(hit.stats)
            if hit.usable_until > now:
                if not hit.refreshing:
                    hit.refreshing = True
                    self._spawn(self._refresh_stats(endpoint, names, hit))
                return list(hit.stats)
        return await self._read_stats(endpoint, names)

    async def _read_stats(self, endpoint: str, names: list[str]) -> list[VariantStats]:
        read_at = time.monotonic()
        stats = await self.store.stats(endpoint, names)
        ttl = self.settings.stats_cache_ttl_s
        if ttl > 0:
            self._stats[endpoint] = _CachedStats(
                read_at + ttl, read_at + ttl + self.settings.cache_refresh_grace_s, names, stats
            )
        return list(stats)

    async def _refresh_stats(self, endpoint: str, names: list[str], hit: _CachedStats) -> None:
        try:
            await self._read_stats(endpoint, names)
        except Exception:
            log.warning("refreshing the statistics of %s failed", endpoint, exc_info=True)
        finally:
            hit.refreshing = False

    def _count_locally(self, endpoint: str, variant: str) -> None:
        """Count a decision in the cached statistics, so that decision-driven policies (UCB, the minimum
        sample) move on within the cache window instead of repeating one choice."""
        hit = self._stats.get(endpoint)
        if hit is not None and variant in hit.names:
            i = hit.names.index(variant)
            hit.stats[i] = replace(hit.stats[i], decisions=hit.stats[i].decisions + 1)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish(self, record: events_pb2.Prediction) -> None:
        assert self._producer is not None
        await self._producer.send(topics.PREDICTIONS, record, key=prediction_key(record),
                                  event_id=prediction_event_id(record))

    async def _republish(self, records: list[JournalRecord]) -> None:
        """Send journaled records a stopped process never had acknowledged (their trace context is gone)."""
        assert self._producer is not None
        await self._producer.send_many(
            topics.PREDICTIONS, [(r.key, events_pb2.Prediction.FromString(r.value), r.id) for r in records])

    async def sweep_journal(self) -> None:
        """At start, then every ``journal_sweep_s``: republish the records of processes that died (this
        one's predecessor after a kill -9, or a replica sharing the journal's directory)."""
        while True:
            try:
                await self.outbox.recover(self._republish)
            except Exception:
                log.warning("republishing journaled predictions failed; retrying", exc_info=True)
            await asyncio.sleep(self.settings.journal_sweep_s)

    async def drain(self) -> None:
        """On stop: let running mirrors finish, then send every prediction still held."""
        await self.mirror.drain(timeout_s=self.settings.inference_timeout_s)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.outbox.drain(timeout_s=self.settings.publish_drain_timeout_s)

    # -- rewards -------------------------------------------------------------------------------------
    async def record_reward(self, event_id: str, reward: events_pb2.Reward) -> str:
        """Settle ``reward``'s decision once per ``event_id``: applied, duplicate, late or stale."""
        outcome = await self.store.apply_reward(event_id, reward.endpoint, reward.prediction_id, reward.reward)
        metrics.REWARDS.labels(reward.endpoint, outcome).inc()
        return outcome


def _same_context(old: EndpointSpec | None, new: EndpointSpec) -> bool:
    """Whether ``old`` was a LinUCB policy over the same features as ``new`` (its state stays valid)."""
    if old is None or old.policy.type != LinUCBPolicy.type:
        return False
    return list(old.policy.params.get("features") or []) == list(new.policy.params.get("features") or [])

