"""The drift service's logic, per model version:

- prediction drift: a streaming detector on the positive-class score (per partition, see below), and the
  score's window against the training scores in the reference;
- data drift: each feature's window against the reference (:mod:`services.drift.datadrift`);
- concept drift: a streaming detector on the per-example loss of labelled predictions;
- data quality: missing and out-of-range rates in the window, and the dead-letter rate;

raising one :class:`DriftAlert` per episode, with its evidence, on ``drift.alerts``.

Sequential detectors run one per (model version, partition): a detector needs its values in order, and
Kafka orders records only within a partition (``predictions`` are keyed by prediction id; ``labels`` by
model, so a version's labels are one ordered stream). A process that meets a (version, partition) for the
first time rebuilds its detector by replaying the recent values kept in Redis, and a version's data
window from the rows kept there, so a restart or a rebalance costs no warm-up.

Order per record, chosen so that a crash anywhere loses no alert: skip if its ``event_id`` is done; update
the detectors and windows; on an alert, store it (atomically with the cooldown check, across replicas)
and produce it (deterministic id, so repeats are dropped); last, count the record and mark it done in
one script. A crash before the last step redelivers the record to state rebuilt without it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from mlops.bus import topics
from mlops.bus.deadletter import SOURCE_TOPIC
from mlops.bus.envelope import Envelope
from mlops.bus.producer import Producer
from mlops.errors import NotFound, PoisonRecord
from mlops.v1 import events_pb2
from services.drift import datadrift, detectors, metrics
from services.drift.references import ReferenceCache
from services.drift.report import Report, build_alert, error_indicator, example_loss, positive_score
from services.drift.sequential import Firing, Sequential, SequentialConfig
from services.drift.settings import DriftSettings
from services.drift.store import LABEL_LOSSES, PREDICTION_SCORES, DriftStore, Extra, Stream

log = logging.getLogger(__name__)

EVIDENCE_HEADER = "mlops-evidence"
_STATISTIC = {PREDICTION_SCORES.name: "mean positive-class score", LABEL_LOSSES.name: "mean per-example loss"}
_FEATURE = {PREDICTION_SCORES.name: "score", LABEL_LOSSES.name: "loss"}


@dataclass
class _Version:
    """What this process holds for one model version: its data window and the checks' episode states."""

    rows: deque[datadrift.Row]
    since_eval: int = 0
    checks: dict[str, datadrift.Hysteresis] = field(default_factory=dict)


def _seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


class DriftMonitor:
    """One instance per process; transports and consumers call into it."""

    def __init__(
        self,
        store: DriftStore,
        producer: Producer,
        settings: DriftSettings,
        references: ReferenceCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._producer = producer
        self._settings = settings
        self._references = references
        self._clock = clock
        self._sequential: dict[tuple[str, str, str, int], Sequential] = {}
        self._seq_updates: dict[tuple[str, str, str, int], int] = {}
        self._versions: dict[tuple[str, str], _Version] = {}

    @property
    def detector_type(self) -> str:
        return self._settings.detector.type

    def _now_ts(self, when: Timestamp) -> Timestamp:
        if when.seconds or when.nanos:
            return when
        ts = Timestamp()
        ts.FromNanoseconds(int(self._clock() * 1e9))
        return ts

    # -- consumers ---------------------------------------------------------------------------------------
    async def on_prediction(self, prediction: events_pb2.Prediction, event_id: str, partition: int = 0) -> None:
        if not prediction.model or not prediction.version:
            raise PoisonRecord("prediction without model or version", field="model")
        stream, model, version = PREDICTION_SCORES, prediction.model, prediction.version
        if await self.store.seen(stream, event_id):
            return
        when = self._now_ts(prediction.time)
        score = positive_score(list(prediction.outputs))
        if score is not None:
            await self._sequential_step(stream, model, version, partition, score, event_id, when,
                                        self._settings.prediction)
        features = {k: float(v) for k, v in prediction.features.items()}
        row = datadrift.Row(features, score, _seconds(when))
        await self._window_step(model, version, row, event_id, when)
        encoded = json.dumps({"f": features, "s": score, "t": row.time})
        counted = await self.store.record(stream, event_id, model, version, partition, score, self._clock(),
                                          Extra(row=encoded))
        if counted is not None and counted[0]:
            metrics.PREDICTION_MEAN.labels(model, version).set(counted[1] / counted[0])

    async def on_label(self, label: events_pb2.Label, event_id: str, partition: int = 0) -> None:
        if not label.model or not label.version:
            raise PoisonRecord("label without model or version", field="model")
        stream, model, version = LABEL_LOSSES, label.model, label.version
        if await self.store.seen(stream, event_id):
            return
        outputs = list(label.outputs)
        error = error_indicator(outputs, label.label)
        log_loss = example_loss(outputs, label.label, "log_loss")
        loss = error if self._settings.concept_loss == "zero_one" else log_loss
        if loss is not None and self._settings.concept_detection:
            await self._sequential_step(stream, model, version, partition, loss, event_id,
                                        self._now_ts(label.time), self._settings.concept)
        extra = Extra()
        if error is not None and log_loss is not None:
            extra = Extra(outcome=f"{1.0 - error:g},{log_loss!r}", sum_field="error_sum", sum_value=error)
        await self.store.record(stream, event_id, model, version, partition, loss, self._clock(), extra)

    async def on_dead_letter(self, env: Envelope) -> None:
        """Count a dead letter by its source topic; an unusual rate of them is a data-quality alert."""
        source = env.headers.get(SOURCE_TOPIC) or "unknown"
        at = env.timestamp_ms / 1000.0 if env.timestamp_ms > 0 else self._clock()
        cfg = self._settings.dead_letters
        if not await self.store.count_dead_letter(env.event_id, source, int(at // 60), cfg.window_s):
            return
        rates = await self.dead_letter_rates(at)
        rate = rates.get(source, 0.0)
        if rate > cfg.max_per_minute and await self.store.set_dead_letter_state(source, True):
            ts = Timestamp()
            ts.FromNanoseconds(int(at * 1e9))
            evidence = {
                "check": "quality",
                "statistic": "dead letters per minute",
                "value": rate,
                "threshold": cfg.max_per_minute,
                "window": {"seconds": cfg.window_s, "to": at},
                "reference": "the threshold",
                "features": [f"dead_letter_rate:{source}"],
            }
            alert = build_alert(kind="quality", model="", version="", event_id=env.event_id,
                                feature=f"dead_letter_rate:{source}", score=rate, threshold=cfg.max_per_minute,
                                detector="dead_letter_rate", time=ts)
            await self._raise(alert, evidence)

    async def dead_letter_rates(self, now: float | None = None) -> dict[str, float]:
        cfg = self._settings.dead_letters
        now = self._clock() if now is None else now
        minutes = max(1, math.ceil(cfg.window_s / 60))
        last = int(now // 60)
        counts = await self.store.dead_letters(list(range(last - minutes + 1, last + 1)))
        return {topic: n / minutes for topic, n in counts.items()}

    async def tick(self) -> None:
        """Periodic: a source topic whose dead-letter rate fell below half the threshold is calm again."""
        rates = await self.dead_letter_rates()
        for topic in await self.store.dead_letter_state():
            if rates.get(topic, 0.0) < self._settings.dead_letters.max_per_minute / 2:
                await self.store.set_dead_letter_state(topic, False)

    # -- sequential detectors ----------------------------------------------------------------------------
    async def _sequential_step(
        self,
        stream: Stream,
        model: str,
        version: str,
        partition: int,
        value: float,
        event_id: str,
        when: Timestamp,
        config: SequentialConfig,
    ) -> None:
        key = (stream.name, model, version, partition)
        seq = self._sequential.get(key)
        if seq is None:
            seq = await self._rebuild(stream, model, version, partition, config)
        firing = seq.update(value)
        estimate = seq.detector.estimate
        if estimate is not None:
            metrics.DETECTOR_ESTIMATE.labels(model, version, stream.name).set(estimate)
        n = self._seq_updates[key] = self._seq_updates.get(key, 0) + 1
        if firing is not None or n % self._settings.state_every == 0:
            await self.store.put_fields(model, version, {f"seq:{stream.name}:{partition}": json.dumps(seq.state())})
        if firing is not None:
            await self._raise_sequential(stream, model, version, partition, event_id, when, seq, firing)

    def _signal(self, stream: Stream) -> detectors.Signal:
        return "score" if stream is PREDICTION_SCORES else self._settings.concept_loss

    async def _rebuild(
        self, stream: Stream, model: str, version: str, partition: int, config: SequentialConfig
    ) -> Sequential:
        detector = self._settings.detector_for(self._signal(stream))
        seq = Sequential(detectors.build(detector), config, rearm=lambda: detectors.build(detector))
        history = await self.store.recent(stream, model, version, partition)
        # Replayed silently: a rebuilt detector must not re-raise alerts about its history.
        seq.replay(history)
        seq = self._sequential.setdefault((stream.name, model, version, partition), seq)
        metrics.DETECTORS.set(len(self._sequential))
        if history:
            log.info("rebuilt %s detector for %s/%s partition %d from %d values",
                     stream.name, model, version, partition, len(history))
        return seq

    async def _raise_sequential(
        self, stream: Stream, model: str, version: str, partition: int, event_id: str, when: Timestamp,
        seq: Sequential, firing: Firing,
    ) -> None:
        detector = seq.detector
        evidence = {
            "check": stream.name,
            "statistic": _STATISTIC[stream.name]
            + (f" ({self._settings.concept_loss})" if stream is LABEL_LOSSES else ""),
            "detector": {"type": detector.type,
                         **self._settings.detector_for(self._signal(stream)).model_dump(exclude={"type"})},
            "baseline": firing.baseline,
            "current": firing.current,
            "effect": firing.effect,
            "z": firing.z if math.isfinite(firing.z) else None,
            "min_effect": seq.config.min_effect,
            "window": {"baseline_values": firing.baseline_n, "recent_values": firing.recent_n,
                       "partition": partition, "to": _seconds(when)},
            "reference": "the version's own stream since it was last stable",
            "features": [_FEATURE[stream.name]],
        }
        alert = build_alert(kind=stream.name, model=model, version=version, event_id=event_id,
                            feature=_FEATURE[stream.name], score=firing.current, threshold=detector.threshold,
                            detector=detector.type, time=when)
        await self._raise(alert, evidence)

    # -- window checks against the reference -------------------------------------------------------------
    async def _version(self, model: str, version: str) -> _Version:
        key = (model, version)
        state = self._versions.get(key)
        if state is not None:
            return state
        window = self._settings.data.window
        rows: deque[datadrift.Row] = deque(maxlen=window)
        for raw in await self.store.rows(model, version):
            d = json.loads(raw)
            rows.append(datadrift.Row(d.get("f") or {}, d.get("s"), float(d.get("t") or 0.0)))
        saved = await self.store.state(model, version)
        checks = {name: datadrift.Hysteresis.from_dict(json.loads(saved[f"state:{name}"]))
                  for name in ("data", "prediction_window", "quality") if f"state:{name}" in saved}
        return self._versions.setdefault(key, _Version(rows, 0, checks))

    async def _window_step(
        self, model: str, version: str, row: datadrift.Row, event_id: str, when: Timestamp
    ) -> None:
        state = await self._version(model, version)
        state.rows.append(row)
        state.since_eval += 1
        cfg = self._settings.data
        if len(state.rows) < cfg.min_window or state.since_eval < cfg.step or self._references is None:
            return
        reference = await self._references.get(model, version)
        if reference is None:
            return
        state.since_eval = 0
        ev = datadrift.evaluate(list(state.rows), reference, cfg.correction)
        for f in ev.features.values():
            metrics.FEATURE_PSI.labels(model, version, f.name).set(f.psi)
        fields = {"scores:data": json.dumps(ev.to_dict())}
        raised: list[tuple[str, set[str]]] = []
        for check, verdicts in (
            ("data", datadrift.data_verdicts),
            ("prediction_window", datadrift.prediction_verdicts),
            ("quality", datadrift.quality_verdicts),
        ):
            hysteresis = state.checks.setdefault(check, datadrift.Hysteresis())
            before = hysteresis.to_dict()
            opened = hysteresis.step(*verdicts(ev, cfg), cfg.clear_evaluations)
            if hysteresis.to_dict() != before:
                fields[f"state:{check}"] = json.dumps(hysteresis.to_dict())
            if opened:
                raised.append((check, opened))
        await self.store.put_fields(model, version, fields)
        for check, opened in raised:
            await self._raise_window(check, model, version, event_id, when, ev, opened)

    async def _raise_window(
        self, check: str, model: str, version: str, event_id: str, when: Timestamp, ev: datadrift.Evaluation,
        opened: set[str],
    ) -> None:
        cfg = self._settings.data
        base = {"window": ev.window(), "reference": {"sha256": ev.reference_sha256, "rows": ev.reference_rows}}
        if check == "data":
            involved = sorted(opened, key=lambda n: -ev.features[n].psi)
            top = ev.features[involved[0]]
            evidence = {
                "check": "data", "statistic": "PSI with KS (numeric) / chi-squared (categorical) p-values",
                "correction": ev.correction, "alpha": cfg.alpha, "psi_alert": cfg.psi_alert, **base,
                "features": {n: ev.features[n].to_dict() for n in involved},
            }
            alert = build_alert(kind="data", model=model, version=version, event_id=event_id,
                                feature=",".join(involved), score=top.psi, threshold=cfg.psi_alert,
                                detector=f"psi+{'/'.join(sorted({ev.features[n].test for n in involved}))}",
                                time=when)
        elif check == "prediction_window":
            assert ev.prediction is not None
            p = ev.prediction
            evidence = {"check": "prediction", "statistic": "PSI and KS of the positive-class score",
                        "alpha": cfg.alpha, "psi_alert": cfg.psi_alert, **base, "features": {"prediction": p.to_dict()}}
            alert = build_alert(kind="prediction", model=model, version=version, event_id=event_id,
                                feature="prediction", score=p.psi, threshold=cfg.psi_alert, detector="psi+ks",
                                time=when)
        else:
            issues = sorted(opened)
            rates = {}
            for issue in issues:
                kind, name = issue.split(":", 1)
                f = ev.features[name]
                rates[issue] = f.missing_rate if kind == "missing" else f.out_of_range_rate
            worst = max(issues, key=rates.__getitem__)
            limit = cfg.max_missing_rate if worst.startswith("missing") else cfg.max_out_of_range_rate
            evidence = {"check": "quality", "statistic": "missing and out-of-range rates in the window",
                        "max_missing_rate": cfg.max_missing_rate, "max_out_of_range_rate": cfg.max_out_of_range_rate,
                        **base, "features": rates}
            alert = build_alert(kind="quality", model=model, version=version, event_id=event_id,
                                feature=",".join(issues), score=rates[worst], threshold=limit,
                                detector=worst.split(":", 1)[0] + "_rate", time=when)
        await self._raise(alert, evidence)

    # -- alerts ------------------------------------------------------------------------------------------
    async def _raise(self, alert: events_pb2.DriftAlert, evidence: dict[str, Any]) -> bool:
        """Store (unless cooled down) and produce one alert; True when it went out."""
        encoded = json.dumps(evidence, default=float)
        outcome = await self.store.add_alert(
            alert.kind, alert.alert_id, alert.SerializeToString(), alert.model, alert.version,
            _seconds(alert.time), self._settings.alert_cooldown_s, encoded,
        )
        if outcome == 0:
            metrics.ALERTS_SUPPRESSED.labels(alert.model, alert.version, alert.kind).inc()
            log.info("%s drift on %s/%s within the cooldown: not alerted again", alert.kind, alert.model, alert.version)
            return False
        # Produced even when the alert was already stored: an earlier try may have crashed before this.
        await self._producer.send(topics.DRIFT_ALERTS, alert, key=alert.model or None, event_id=alert.alert_id,
                                  headers={EVIDENCE_HEADER: encoded[:8000]})
        if outcome == 1:
            metrics.ALERTS.labels(alert.model, alert.version, alert.kind, alert.detector).inc()
        log.warning("%s drift on %s/%s (%s, %s = %.4f)", alert.kind, alert.model, alert.version, alert.detector,
                    alert.feature, alert.score)
        return True

    # -- queries -----------------------------------------------------------------------------------------
    async def report(self, model: str, version: str) -> Report:
        state = await self.store.state(model, version)
        if not state:
            raise NotFound(f"no predictions or labels seen for model {model!r} version {version!r}", field="version")
        outcomes = await self.store.outcomes(model, version, self._settings.data.window)
        entry = self._references.entry(model, version) if self._references is not None else None
        if self._references is not None and entry is None:
            await self._references.get(model, version)
            entry = self._references.entry(model, version)
        reference = entry.to_dict() if entry is not None else {"status": "not_checked"}
        return Report.build(model, version, state, self.detector_type, outcomes, reference,
                            self._settings.concept_loss)

    async def alerts(
        self, model: str | None = None, version: str | None = None, kind: str | None = None, limit: int = 100
    ) -> list[tuple[events_pb2.DriftAlert, dict[str, Any] | None]]:
        """Newest first, optionally for one model (and version) and kind, each with its evidence."""
        out = []
        for raw in await self.store.alerts(self.store.max_alerts):
            alert = events_pb2.DriftAlert.FromString(raw)
            if (model and alert.model != model) or (version and alert.version != version) or (
                kind and alert.kind != kind
            ):
                continue
            out.append(alert)
            if len(out) >= limit:
                break
        evidence = await self.store.evidence([a.alert_id for a in out])
        return list(zip(out, evidence, strict=True))
