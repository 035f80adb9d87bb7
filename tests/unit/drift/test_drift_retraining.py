"""The retraining policy: the file, and each trigger turning into one training request per cooldown,
recorded with its reason, with the closed loop's fields (stage candidate, recent_rows, empty lineage)."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from mlops.errors import InvalidArgument
from mlops.service import Service
from mlops.settings import PlatformSettings, service_settings
from mlops.v1 import events_pb2
from services.drift import http, policy
from services.drift.core import DriftMonitor
from services.drift.retraining import Retrainer
from services.drift.settings import DEFAULT_POLICY, DriftSettings
from tests.unit.drift.fakes import FakeProducer, MemoryRetrainStore, MemoryStore

T0 = 1_700_000_000.0


def _policy(**overrides: object) -> policy.RetrainingPolicy:
    p = {"models": ["loan*"], "stages": ["production"], "cooldown_s": 600,
         "request": {"stage": "candidate", "recent_rows": 2000}, "triggers": [{"type": "drift"}], **overrides}
    return policy.RetrainingPolicy.model_validate({"policies": [p]})


class Loop:
    """A retrainer over in-memory stores, a registry that knows stages, and a settable clock."""

    def __init__(self, pol: policy.RetrainingPolicy, stages: dict[tuple[str, str], str] | None = None,
                 feedback: tuple[int, float | None, float | None] | None = None) -> None:
        self.now = T0
        self.drift_store = MemoryStore()
        self.store = MemoryRetrainStore(self.drift_store.retrain)
        self.producer = FakeProducer()
        self.stages = stages if stages is not None else {("loan-approval", "1"): "production"}
        self.feedback = feedback

        async def stage_of(model: str, version: str) -> str | None:
            return self.stages.get((model, version))

        async def feedback_quality(model: str, version: str) -> tuple[int, float | None, float | None] | None:
            return self.feedback

        self.retrainer = Retrainer(pol, self.store, self.producer, stage_of=stage_of,  # type: ignore[arg-type]
                                   recent_outcomes=self.drift_store.outcomes, versions=self.drift_store.versions,
                                   feedback_quality=feedback_quality, clock=lambda: self.now)
        self.monitor = DriftMonitor(self.drift_store, self.producer, DriftSettings(concept_detection=False),  # type: ignore[arg-type]
                                    clock=lambda: self.now)

    def requests(self) -> list[events_pb2.TrainingRequest]:
        return self.producer.on("training.requests")

    async def labels(self, n: int, accuracy: float, version: str = "1", seed: int = 0) -> None:
        rng = random.Random(seed)
        start = len(self.drift_store.done)
        for i in range(n):
            right = rng.random() < accuracy
            await self.monitor.on_label(events_pb2.Label(prediction_id=f"p{start + i}", model="loan-approval",
                                                         version=version, outputs=[0.2, 0.8], label=1 if right else 0),
                                        f"label:{start + i}")


def _alert(version: str = "1", kind: str = "concept", event: str = "e7") -> events_pb2.DriftAlert:
    return events_pb2.DriftAlert(alert_id=f"drift:{kind}:loan-approval:{version}:{event}", model="loan-approval",
                                 version=version, kind=kind, feature="loss", score=2.5, threshold=0.002,
                                 detector="adwin")


def test_the_shipped_policy_file_is_valid_and_is_the_default() -> None:
    assert DriftSettings().retraining_policy == DEFAULT_POLICY
    loaded = policy.load(DEFAULT_POLICY)
    p = loaded.for_model("anything")
    assert p is not None and p.request.stage == "candidate" and p.request.recent_rows == 2000
    assert {t.type for t in p.triggers} == {"drift", "quality", "schedule", "new_labels"}


@pytest.mark.parametrize(("text", "field"), [
    ("policies: [{triggers: [{type: nope}]}]", "policies.0.triggers.0"),
    ("policies: [{triggers: [{type: quality, metric: accuracy}]}]", "policies.0.triggers.0.quality"),
    ("policies: [{triggers: [{type: schedule, cron: 'every day'}]}]", "policies.0.triggers.0.schedule.cron"),
    ("policies: [{triggers: [{type: schedule}]}]", "policies.0.triggers.0.schedule"),
    ("policies: [{cooldown_s: -1}]", "policies.0.cooldown_s"),
    ("policies: [{triggers: [{type: drift, kinds: [weather]}]}]", "policies.0.triggers.0.drift.kinds.0"),
])
def test_a_bad_policy_file_is_refused_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(InvalidArgument) as err:
        policy.load(path)
    assert err.value.field == field
    with pytest.raises(InvalidArgument):
        policy.load(tmp_path / "missing.yaml")


def test_the_first_matching_policy_applies() -> None:
    pol = policy.RetrainingPolicy.model_validate({"policies": [
        {"models": ["fraud-*"], "cooldown_s": 1}, {"models": ["*"], "cooldown_s": 2}]})
    assert pol.for_model("fraud-eu").cooldown_s == 1 and pol.for_model("loans").cooldown_s == 2  # type: ignore[union-attr]
    assert policy.RetrainingPolicy.model_validate({"enabled": False, "policies": [{}]}).for_model("x") is None
    assert pol.named_models() == []


async def test_a_drift_alert_asks_once_per_cooldown_with_the_loops_fields() -> None:
    loop = Loop(_policy())
    decision = await loop.retrainer.on_alert(_alert())
    assert decision is not None and decision.outcome == "requested"
    [req] = loop.requests()
    assert req.model == "loan-approval" and req.stage == "candidate" and req.recent_rows == 2000
    assert (req.stream, list(req.features), req.label) == ("", [], ""), "as production was trained"
    assert req.request_id == "retrain:loan-approval:concept:loan-approval:1:e7"
    assert req.reason.startswith("drift: concept drift on version 1 (production)")
    assert req.time.seconds == int(T0)
    assert loop.producer.sent[0][2] == req.request_id, "the event_id is the deterministic request id"
    # Redelivered: nothing new. Another shift's alert within the cooldown: held back and recorded.
    assert (await loop.retrainer.on_alert(_alert())).outcome == "duplicate"  # type: ignore[union-attr]
    loop.now += 60
    assert (await loop.retrainer.on_alert(_alert(kind="data", event="e9"))).outcome == "cooldown"  # type: ignore[union-attr]
    assert len(loop.requests()) == 1
    loop.now += 600
    assert (await loop.retrainer.on_alert(_alert(kind="data", event="e11"))).outcome == "requested"  # type: ignore[union-attr]
    assert len(loop.requests()) == 2
    recorded = await loop.retrainer.recorded("loan-approval")
    assert [d["outcome"] for d in recorded["decisions"]] == ["requested", "cooldown", "requested"]
    assert [r["trigger"] for r in recorded["requests"]] == ["drift", "drift"]
    assert recorded["requests"][0]["state"] == "sent" and "pb" not in recorded["requests"][0]
    assert recorded["policy"]["policies"][0]["cooldown_s"] == 600


async def test_a_drift_alert_with_settle_labels_waits_for_post_change_labels_and_trains_on_them() -> None:
    loop = Loop(_policy(triggers=[{"type": "drift", "settle_labels": 300},
                                  {"type": "quality", "metric": "accuracy", "below": 0.6, "min_labels": 100,
                                   "window": 100}]))
    decision = await loop.retrainer.on_alert(_alert())
    assert decision is not None and decision.outcome == "held"
    assert await loop.retrainer.on_alert(_alert(event="e8")) is None, "one held alert at a time"
    await loop.labels(299, accuracy=0.3)
    assert await loop.retrainer.tick() == [] and loop.requests() == [], "quality waits with the held alert"
    await loop.labels(1, accuracy=0.3, seed=1)
    [released] = await loop.retrainer.tick()
    assert released.outcome == "requested" and "after 300 labels" in released.reason
    [request] = loop.requests()
    assert request.recent_rows == 300, "the new version learns only the world after the change"
    assert request.stage == "candidate" and not request.stream
    await loop.labels(400, accuracy=0.3, seed=2)
    assert await loop.retrainer.tick() == [], "released once"


async def test_alerts_that_the_policy_does_not_count_ask_nothing() -> None:
    loop = Loop(_policy(), stages={("loan-approval", "1"): "production", ("loan-approval", "2"): "candidate"})
    assert await loop.retrainer.on_alert(_alert(kind="prediction")) is None, "kind not in the trigger"
    assert await loop.retrainer.on_alert(_alert(version="2")) is None, "a candidate's drift"
    assert await loop.retrainer.on_alert(_alert(version="3")) is None, "a version the registry does not know"
    other = _alert()
    other.model = "churn"
    assert await loop.retrainer.on_alert(other) is None, "no policy for the model"
    assert loop.requests() == []
    anyone = Loop(_policy(stages=[]), stages={})
    assert (await anyone.retrainer.on_alert(_alert(version="3"))).outcome == "requested"  # type: ignore[union-attr]


async def test_quality_below_the_threshold_asks_once_from_the_recent_labels() -> None:
    trigger = {"type": "quality", "metric": "accuracy", "below": 0.7, "min_labels": 200, "window": 300}
    loop = Loop(_policy(triggers=[trigger]))
    await loop.labels(150, accuracy=0.4)
    assert await loop.retrainer.tick() == [], "too few labels yet"
    await loop.labels(400, accuracy=0.95, seed=1)
    assert await loop.retrainer.tick() == [], "the recent window is fine"
    await loop.labels(300, accuracy=0.5, seed=2)
    [decision] = await loop.retrainer.tick()
    assert decision.trigger == "quality" and decision.outcome == "requested"
    assert "accuracy 0.5" in decision.reason and "< 0.7 on version 1 (production)" in decision.reason
    assert await loop.retrainer.tick() == [], "within the cooldown: no decision at all"
    loop.now += 601
    [again] = await loop.retrainer.tick()
    assert again.outcome == "requested" and again.request_id != decision.request_id
    assert len(loop.requests()) == 2


async def test_quality_read_from_the_feedback_service() -> None:
    trigger = {"type": "quality", "metric": "log_loss", "above": 0.8, "min_labels": 100, "source": "feedback"}
    loop = Loop(_policy(triggers=[trigger]), feedback=(500, 0.6, 0.9))
    await loop.labels(5, accuracy=1.0)  # the version is known to the drift service
    [decision] = await loop.retrainer.tick()
    assert "log_loss 0.9 > 0.8" in decision.reason and "(feedback)" in decision.reason
    quiet = Loop(_policy(triggers=[trigger]), feedback=None)
    await quiet.labels(5, accuracy=1.0)
    assert await quiet.retrainer.tick() == []


async def test_new_labels_ask_after_the_count_and_count_again_after_a_request() -> None:
    loop = Loop(_policy(triggers=[{"type": "new_labels", "count": 100}], cooldown_s=0))
    await loop.labels(99, accuracy=0.9)
    assert await loop.retrainer.tick() == []
    await loop.labels(1, accuracy=0.9, seed=1)
    [decision] = await loop.retrainer.tick()
    assert decision.trigger == "new_labels" and decision.reason.startswith("new_labels: 100 new labelled")
    assert await loop.retrainer.tick() == [], "the count starts again from the request"
    await loop.labels(100, accuracy=0.9, seed=2)
    assert [d.outcome for d in await loop.retrainer.tick()] == ["requested"]
    assert len({r.request_id for r in loop.requests()}) == 2


@pytest.mark.parametrize("schedule", [{"every_s": 3600}, {"cron": "0 * * * *"}])
async def test_the_schedule_asks_at_each_due_time(schedule: dict) -> None:
    loop = Loop(_policy(models=["loan-approval"], triggers=[{"type": "schedule", **schedule}], cooldown_s=0))
    loop.now = 1_700_000_000.0  # 22:13:20 UTC
    assert await loop.retrainer.tick() == [], "a named model is scheduled from the first tick, not asked at once"
    loop.now = 1_700_002_800.0  # 23:00:00
    [decision] = await loop.retrainer.tick()
    assert decision.request_id == "retrain:loan-approval:schedule:1700002800"
    assert await loop.retrainer.tick() == []
    loop.now += 3600
    assert len(await loop.retrainer.tick()) == 1 and len(loop.requests()) == 2


async def test_a_claim_left_unsent_by_a_crash_is_sent_by_the_next_tick() -> None:
    loop = Loop(_policy())

    class Crash(Exception):
        pass

    async def crash(*_: object, **__: object) -> str:
        raise Crash

    send = loop.producer.send
    loop.producer.send = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await loop.retrainer.on_alert(_alert())
    loop.producer.send = send  # type: ignore[method-assign]
    loop.now += 5
    await loop.retrainer.tick()
    assert loop.requests() == [], "a fresh claim may still be in flight elsewhere"
    loop.now += 60
    await loop.retrainer.tick()
    [req] = loop.requests()
    assert req.request_id == "retrain:loan-approval:concept:loan-approval:1:e7"
    assert (await loop.retrainer.recorded())["requests"][0]["state"] == "sent"


async def test_rest_lists_the_policy_requests_and_decisions() -> None:
    loop = Loop(_policy())
    await loop.retrainer.on_alert(_alert())
    service = Service(PlatformSettings(), service_settings("drift"), kafka=False)
    service.add_http(http.router(loop.monitor, loop.retrainer))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://t") as client:
        body = (await client.get("/v1/retraining", params={"model": "loan-approval"})).json()
        assert body["requests"][0]["reason"].startswith("drift: ") and body["decisions"][0]["outcome"] == "requested"
        assert (await client.get("/v1/retraining", params={"model": "other"})).json()["requests"] == []
        assert (await client.get("/v1/retraining", params={"limit": 0})).status_code == 400
        assert (await client.get("/v1/alerts", params={"kind": "weather"})).status_code == 400
        assert (await client.get("/v1/drift/loan-approval/1")).status_code == 404


async def test_new_labels_honour_the_stage_filter() -> None:
    """Labels about a model with no version in the policy's stages (never registered, or only a candidate)
    ask for no training, as the drift and quality triggers already did."""
    trigger = [{"type": "new_labels", "count": 100}]
    unregistered = Loop(_policy(triggers=trigger, cooldown_s=0), stages={})
    await unregistered.labels(150, accuracy=0.9)
    assert await unregistered.retrainer.tick() == []
    assert unregistered.requests() == []
    candidate = Loop(_policy(triggers=trigger, cooldown_s=0), stages={("loan-approval", "1"): "candidate"})
    await candidate.labels(150, accuracy=0.9)
    assert await candidate.retrainer.tick() == [] and candidate.requests() == []
    anyone = Loop(_policy(triggers=trigger, cooldown_s=0, stages=[]), stages={})
    await anyone.labels(150, accuracy=0.9)
    [decision] = await anyone.retrainer.tick()
    assert decision.outcome == "requested", "stages [] counts every version"
    production = Loop(_policy(triggers=trigger, cooldown_s=0))
    await production.labels(150, accuracy=0.9)
    [decision] = await production.retrainer.tick()
    assert decision.outcome == "requested" and "versions 1 (production)" in decision.reason
    assert [r.model for r in production.requests()] == ["loan-approval"]
