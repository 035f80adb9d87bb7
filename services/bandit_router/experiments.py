"""Experiments that run themselves: the :class:`Controller` every router process runs in the background.

Each round (``evaluate_interval_s``), for every endpoint: settle decisions whose reward is overdue; roll a
canary back when it breaches a guardrail; finish a bandit experiment when one arm's probability of being
best reaches ``promote_threshold`` after ``min_samples`` rewards per arm -- the registry promotes it to
production (and archives the previous production), losing candidates are archived, the other arms leave
the endpoint, and an ``AuditRecord`` goes to ``audit.log``. From ``models.lifecycle`` it adds new registry
candidates as arms of endpoints with ``auto_candidates`` (and drops arms archived elsewhere).

Replicas run the same loop against the same Redis state, so every action is guarded: a short lease per
endpoint and action, a compare-and-set on the spec's revision, and deterministic ``event_id`` s for the
audit records ("publish, then mark": a crash in between repeats the record, which consumers drop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

from google.protobuf import timestamp_pb2

from mlops import telemetry
from mlops.bus import topics
from mlops.bus.producer import Producer
from mlops.errors import InvalidArgument, MlopsError, Unavailable
from mlops.v1 import events_pb2
from services.bandit_router import guardrails, metrics
from services.bandit_router.clients import ACTOR, Unservable
from services.bandit_router.core import Change, Changer, Router
from services.bandit_router.policies import CanaryPolicy, Policy
from services.bandit_router.spec import EndpointSpec, PolicySpec, VariantSpec
from services.bandit_router.store import Event

log = logging.getLogger(__name__)

CANDIDATE, PRODUCTION, ARCHIVED = "candidate", "production", "archived"
#: Registry stages a losing arm is archived from (production is archived by the registry itself).
RETIRABLE = ("candidate", "shadow", "canary")


class PromotionInProgress(Unavailable):
    """An endpoint is being promoted right now: a lifecycle event about it is retried a little later."""


def add_arm(model: str, version: str) -> Changer:
    """Add ``model:version`` as arm ``v<version>`` (new experiment: every arm restarts, if so configured)."""

    def change(current: EndpointSpec | None) -> Change | None:
        if current is None or any(v.model == model and v.version == version for v in current.variants):
            return None
        policy = Policy.create(current.policy.type, current.policy.params)
        if not policy.experiment.auto_candidates:
            return None
        names = {v.name for v in current.variants}
        name = next(n for n in (f"v{version}", f"{model}-v{version}", f"{model}:{version}") if n not in names)
        arm = VariantSpec(name=name, model=model, version=version, weight=1.0)
        reset = [v.name for v in current.variants] if policy.experiment.reset_on_new_arm else []
        event = Event.now("arm_added", variant=name, model=model, version=version, reset=reset)
        return replace(current, variants=(*current.variants, arm)), reset, [event]

    return change


def drop_arm(model: str, version: str, reason: str) -> Changer:
    """Remove the arm pinned to ``model:version``, unless it is the last live one."""

    def change(current: EndpointSpec | None) -> Change | None:
        if current is None:
            return None
        gone = [v for v in current.variants if v.model == model and v.version == version]
        if not gone:
            return None
        rest = tuple(v for v in current.variants if v not in gone)
        policy = Policy.create(current.policy.type, current.policy.params)
        if not rest or not policy.live(rest):
            log.warning("not removing %s:%s from %s: it is the last live arm", model, version, current.endpoint)
            return None
        names = [v.name for v in gone]
        return replace(current, variants=rest), names, [Event.now("arm_removed", variants=names, reason=reason)]

    return change


class Controller:
    """Rollbacks, promotions, candidate arms and overdue rewards, for every endpoint."""

    def __init__(
        self,
        router: Router,
        producer: Producer | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.router = router
        self.store = router.store
        self.registry = router.registry
        self.settings = router.settings
        self._producer = producer
        self._clock = clock
        self._owner = uuid.uuid4().hex
        self._stopping = asyncio.Event()

    # -- the loop --------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Background task: evaluate every endpoint each ``evaluate_interval_s`` until stopped."""
        while not self._stopping.is_set():
            try:
                await self.evaluate_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("experiment evaluation failed; retrying next round")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.evaluate_interval_s)

    async def stop(self) -> None:
        self._stopping.set()

    async def evaluate_all(self) -> dict[str, list[str]]:
        actions: dict[str, list[str]] = {}
        for spec in await self.router.list_endpoints():
            try:
                done = await self.evaluate(spec.endpoint)
            except MlopsError as exc:
                log.warning("evaluating endpoint %s: %s", spec.endpoint, exc.message)
                continue
            if done:
                actions[spec.endpoint] = done
        return actions

    async def evaluate(self, endpoint: str) -> list[str]:
        """One round for one endpoint; the actions taken (``rolled_back``, ``promoted``)."""
        spec, policy = await self.router.spec_and_policy(endpoint, fresh=True)
        await self.store.expire(endpoint, self._clock(), policy.experiment.missing_reward)
        if isinstance(policy, CanaryPolicy):
            if not policy.rolled_back and await self._guard_canary(spec, policy):
                return ["rolled_back"]
        elif policy.can_promote and policy.experiment.auto_promote and await self._maybe_promote(spec, policy):
            return ["promoted"]
        return []

    # -- canary ----------------------------------------------------------------------------------------
    async def _guard_canary(self, spec: EndpointSpec, policy: CanaryPolicy) -> bool:
        primary, canary = policy.roles(spec.variants)
        stats = await self.store.stats(spec.endpoint, [primary, canary], latency=True)
        breach = guardrails.check(policy, stats[0], stats[1])
        if breach is None:
            return False
        if not await self.store.lock(spec.endpoint, "rollback", self.settings.lock_ttl_s, self._owner):
            return False
        try:
            with telemetry.tracer().start_as_current_span("bandit-router rollback"):
                await self._audit("rollback", f"{spec.endpoint}/{canary}", breach.reason,
                                  f"audit:{ACTOR}:rollback:{spec.endpoint}:{canary}:{spec.revision}")
                details = {"variant": canary, "to": primary, "rule": breach.rule, "value": breach.value,
                           "limit": breach.limit, "reason": breach.reason}

                def change(current: EndpointSpec | None) -> Change | None:
                    if current is None or current.revision != spec.revision:
                        return None  # changed meanwhile (e.g. a new PUT): judge it afresh next round
                    params = {**current.policy.params, "rolled_back": {"time": self._clock(), **details}}
                    new = replace(current, policy=PolicySpec(current.policy.type, params))
                    return new, [], [Event.now("rolled_back", **details)]

                stored = await self.router.update_endpoint(spec.endpoint, change)
        finally:
            await self.store.unlock(spec.endpoint, "rollback", self._owner)
        if stored is not None:
            metrics.ACTIONS.labels(spec.endpoint, "rolled_back").inc()
            log.warning("endpoint %s: canary %s rolled back to %s: %s", spec.endpoint, canary, primary, breach.reason)
        return stored is not None

    # -- promotion -------------------------------------------------------------------------------------
    async def _maybe_promote(self, spec: EndpointSpec, policy: Policy) -> bool:
        live = [spec.variants[i] for i in policy.live(spec.variants)]
        stats = await self.store.stats(spec.endpoint, [v.name for v in live])
        found = policy.winner(stats)
        if found is None:
            return False
        if not await self.store.lock(spec.endpoint, "promote", self.settings.lock_ttl_s, self._owner):
            return False
        try:
            with telemetry.tracer().start_as_current_span("bandit-router promote"):
                return await self._promote(spec, policy, live, stats, *found)
        except MlopsError as exc:
            metrics.ACTIONS.labels(spec.endpoint, "promotion_failed").inc()
            log.warning("endpoint %s: promotion failed, retrying next round: %s", spec.endpoint, exc.message)
            return False
        finally:
            await self.store.unlock(spec.endpoint, "promote", self._owner)

    async def _promote(self, spec: EndpointSpec, policy: Policy, live: list[VariantSpec], stats: list, index: int,
                       prob_best: float) -> bool:
        winner = live[index]
        signature = await self.router.resolve(winner)
        model, version = signature.model, signature.version
        means = policy.means(stats)
        summary = {v.name: {"rewards": s.rewards, "decisions": s.decisions, "mean": m}
                   for v, s, m in zip(live, stats, means, strict=True)}
        reason = (f"endpoint {spec.endpoint}: variant {winner.name} has P(best)={prob_best:.3f} >= "
                  f"{policy.experiment.promote_threshold:g} after >= {policy.experiment.min_samples} rewards per arm")
        # 1. The registry first: it is the source of truth, and SetStage is idempotent if we crash after it.
        await self.registry.set_stage(model, version, PRODUCTION, reason)
        losers = [v for v in live if v.name != winner.name]
        archived = []
        for loser in losers:
            same = (loser.model, loser.version) == (model, version)
            if not (policy.experiment.retire_losers and loser.version) or same:
                continue
            try:
                stage = (await self.registry.version(loser.model, loser.version)).stage
            except Unservable:
                continue
            if stage in RETIRABLE:
                why = f"lost to {model}:{version}: {reason}"
                await self.registry.set_stage(loser.model, loser.version, ARCHIVED, why)
                archived.append(f"{loser.model}:{loser.version}")
        await self.store.retire(spec.endpoint, [f"{v.model}:{v.version}" for v in losers if v.version])
        # 2. The audit record, with an id that a repeated promotion reuses.
        await self._audit("promote", f"{model}:{version}", reason,
                          f"audit:{ACTOR}:promote:{spec.endpoint}:{model}:{version}:{spec.revision}")
        # 3. The endpoint: only the winner (pinned to the promoted version) and any shadows remain.
        removed = {v.name for v in losers}
        details = {"variant": winner.name, "model": model, "version": version, "prob_best": prob_best,
                   "arms": summary, "removed": sorted(removed), "archived": archived}

        def change(current: EndpointSpec | None) -> Change | None:
            if current is None or not any(v.name == winner.name for v in current.variants):
                return None
            variants = tuple(
                replace(v, version=version, alias="") if v.name == winner.name else v
                for v in current.variants if v.name not in removed
            )
            return replace(current, variants=variants), sorted(removed), [Event.now("promoted", **details)]

        stored = await self.router.update_endpoint(spec.endpoint, change)
        metrics.ACTIONS.labels(spec.endpoint, "promoted").inc()
        log.info("endpoint %s: promoted %s (%s:%s); removed %s", spec.endpoint, winner.name, model, version,
                 ", ".join(sorted(removed)) or "nothing")
        return stored is not None

    async def _audit(self, action: str, target: str, reason: str, event_id: str) -> None:
        if self._producer is None:
            return
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        record = events_pb2.AuditRecord(actor=ACTOR, action=action, target=target, reason=reason,
                                        trace_id=telemetry.current_trace_id(), time=now)
        await self._producer.send(topics.AUDIT_LOG, record, key=target, event_id=event_id)

    # -- models.lifecycle ------------------------------------------------------------------------------
    async def on_lifecycle(self, event: events_pb2.ModelLifecycle) -> list[str]:
        """Follow the registry: the endpoints changed by this event."""
        if event.stage == CANDIDATE:
            return await self.add_candidate(event.model, event.version)
        if event.stage == ARCHIVED:
            return await self.drop_archived(event.model, event.version)
        return []

    async def _auto_endpoints(self, model: str) -> list[EndpointSpec]:
        out = []
        for spec in await self.router.list_endpoints():
            try:
                policy = Policy.create(spec.policy.type, spec.policy.params)
            except InvalidArgument:
                continue
            if policy.experiment.auto_candidates and any(v.model == model for v in spec.variants):
                out.append(spec)
        return out

    async def add_candidate(self, model: str, version: str) -> list[str]:
        specs = await self._auto_endpoints(model)
        if not specs:
            return []
        try:
            stage = (await self.registry.version(model, version)).stage
        except Unservable:
            return []
        if stage != CANDIDATE:
            return []  # a replayed event: the version has moved on since (promoted, archived)
        changed = []
        for spec in specs:
            if f"{model}:{version}" in await self.store.retired(spec.endpoint):
                continue
            try:
                stored = await self.router.update_endpoint(spec.endpoint, add_arm(model, version))
            except InvalidArgument as exc:
                log.warning("endpoint %s: cannot add %s:%s as an arm: %s", spec.endpoint, model, version, exc.message)
                continue
            if stored is not None:
                changed.append(spec.endpoint)
                metrics.ACTIONS.labels(spec.endpoint, "arm_added").inc()
                log.info("endpoint %s: added candidate %s:%s as an arm", spec.endpoint, model, version)
        return changed

    async def drop_archived(self, model: str, version: str) -> list[str]:
        changed = []
        for spec in await self._auto_endpoints(model):
            if not any(v.model == model and v.version == version for v in spec.variants):
                continue
            if await self.store.locked(spec.endpoint, "promote"):
                raise PromotionInProgress(f"endpoint {spec.endpoint} is being promoted")
            stored = await self.router.update_endpoint(
                spec.endpoint, drop_arm(model, version, "archived in the registry")
            )
            if stored is not None:
                changed.append(spec.endpoint)
                metrics.ACTIONS.labels(spec.endpoint, "arm_removed").inc()
        return changed
