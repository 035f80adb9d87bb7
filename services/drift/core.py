"""The drift service's logic: per model version, count predictions and labels once each, feed the
positive-class score (prediction drift) and the error indicator (concept drift) to streaming detectors,
and raise a :class:`DriftAlert` when one fires.

One detector per (stream, model version, partition). A detector needs its values in order, and Kafka
orders records only within a partition: with predictions keyed by prediction id, a consumer catching
up on a backlog reads hundreds of records of one partition, then of the next, so one detector fed
across partitions sees the same shift come and go and raises false alarms. Keyed by model, a version's
stream sits in one partition and this is one detector per version.

Detectors live in this process (see :mod:`services.drift.detectors`); counts, sums, the recent windows
(per partition) and the alerts live in Redis. A process that meets a (model version, partition) for
the first time rebuilds its detector by replaying that window, so a restart or a rebalance costs no
warm-up beyond it.

Order per record, chosen so that a crash anywhere loses no alert: skip if its ``event_id`` is done;
update the detector; on a drift, store and produce the alert (deterministic id, so repeats are dropped);
last, count the record and mark it done in one script. A crash before the last step redelivers the
record to a detector rebuilt without it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from google.protobuf.timestamp_pb2 import Timestamp

from mlops.bus import topics
from mlops.bus.producer import Producer
from mlops.errors import NotFound, PoisonRecord
from mlops.v1 import events_pb2
from services.drift import detectors, metrics
from services.drift.report import Report, build_alert, error_indicator, positive_score
from services.drift.settings import DriftSettings
from services.drift.store import LABEL_ERRORS, PREDICTION_SCORES, DriftStore, Stream

log = logging.getLogger(__name__)

_FEATURE = {PREDICTION_SCORES.name: "score", LABEL_ERRORS.name: "error_rate"}

_Version = tuple[str, str, str]  # stream name, model, version


class DriftMonitor:
    """One instance per process; transports and consumers call into it."""

    def __init__(
        self,
        store: DriftStore,
        producer: Producer,
        settings: DriftSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._producer = producer
        self._settings = settings
        self._clock = clock
        self._detectors: dict[tuple[_Version, int], detectors.DriftDetector] = {}
        # Record time of the last alert per model version and kind (across partitions), for the cooldown.
        self._last_alert: dict[_Version, float] = {}

    @property
    def detector_type(self) -> str:
        return self._settings.detector.type

    # -- consumers ---------------------------------------------------------------------------------------
    async def on_prediction(self, prediction: events_pb2.Prediction, event_id: str, partition: int = 0) -> None:
        if not prediction.model or not prediction.version:
            raise PoisonRecord("prediction without model or version", field="model")
        score = positive_score(list(prediction.outputs))
        await self._observe(
            PREDICTION_SCORES, prediction.model, prediction.version, score, event_id, partition, prediction.time
        )

    async def on_label(self, label: events_pb2.Label, event_id: str, partition: int = 0) -> None:
        if not label.model or not label.version:
            raise PoisonRecord("label without model or version", field="model")
        error = error_indicator(list(label.outputs), label.label)
        await self._observe(
            LABEL_ERRORS,
            label.model,
            label.version,
            error,
            event_id,
            partition,
            label.time,
            detect=self._settings.concept_detection,
        )

    async def _observe(
        self,
        stream: Stream,
        model: str,
        version: str,
        value: float | None,
        event_id: str,
        partition: int,
        when: Timestamp,
        detect: bool = True,
    ) -> None:
        if await self.store.seen(stream, event_id):
            return
        if value is not None and detect:
            alert = await self._detect((stream.name, model, version), stream, partition, value, event_id, when)
            if alert is not None:
                await self._raise(stream, alert)
        counted = await self.store.record(stream, event_id, model, version, partition, value, self._clock())
        if counted is not None and stream is PREDICTION_SCORES and counted[0]:
            metrics.PREDICTION_MEAN.labels(model, version).set(counted[1] / counted[0])

    async def _detect(
        self, key: _Version, stream: Stream, partition: int, value: float, event_id: str, when: Timestamp
    ) -> events_pb2.DriftAlert | None:
        detector = await self._detector(key, stream, partition)
        fired = detector.update(value)
        _, model, version = key
        estimate = detector.estimate
        if estimate is not None:
            metrics.DETECTOR_ESTIMATE.labels(model, version, stream.name).set(estimate)
        if not fired:
            return None
        if not when.seconds and not when.nanos:
            when = Timestamp()
            when.FromNanoseconds(int(self._clock() * 1e9))
        at = when.seconds + when.nanos / 1e9
        last = self._last_alert.get(key)
        if last is not None and abs(at - last) < self._settings.alert_cooldown_s:
            log.info("%s drift on %s/%s partition %d within the cooldown", stream.name, model, version, partition)
            return None
        self._last_alert[key] = at
        return build_alert(
            kind=stream.name,
            model=model,
            version=version,
            event_id=event_id,
            feature=_FEATURE[stream.name],
            score=value if estimate is None else estimate,
            threshold=detector.threshold,
            detector=detector.type,
            time=when,
        )

    async def _detector(self, key: _Version, stream: Stream, partition: int) -> detectors.DriftDetector:
        detector = self._detectors.get((key, partition))
        if detector is None:
            _, model, version = key
            detector = detectors.build(self._settings.detector)
            history = await self.store.recent(stream, model, version, partition)
            # Replayed silently: a rebuilt detector must not re-raise alerts about its history.
            detector.replay(history)
            detector = self._detectors.setdefault((key, partition), detector)
            if key not in self._last_alert:
                state = await self.store.state(model, version)
                if at := state.get(f"{stream.name}_alert_at"):
                    self._last_alert.setdefault(key, float(at))
            metrics.DETECTORS.set(len(self._detectors))
            if history:
                log.info(
                    "rebuilt %s detector for %s/%s partition %d from %d values",
                    stream.name, model, version, partition, len(history),
                )
        return detector

    async def _raise(self, stream: Stream, alert: events_pb2.DriftAlert) -> None:
        at = alert.time.seconds + alert.time.nanos / 1e9
        new = await self.store.add_alert(
            stream, alert.alert_id, alert.SerializeToString(), alert.model, alert.version, at
        )
        # Produced even when the alert was already stored: an earlier try may have crashed before this.
        await self._producer.send(topics.DRIFT_ALERTS, alert, key=alert.model, event_id=alert.alert_id)
        if new:
            metrics.ALERTS.labels(alert.model, alert.version, alert.kind, alert.detector).inc()
        log.warning(
            "%s drift on %s/%s (%s, estimate %.4f)", alert.kind, alert.model, alert.version, alert.detector, alert.score
        )

    # -- queries -----------------------------------------------------------------------------------------
    async def report(self, model: str, version: str) -> Report:
        state = await self.store.state(model, version)
        if not state:
            raise NotFound(f"no predictions or labels seen for model {model!r} version {version!r}", field="version")
        return Report.from_hash(model, version, state, self.detector_type)

    async def alerts(
        self, model: str | None = None, version: str | None = None, limit: int = 100
    ) -> list[events_pb2.DriftAlert]:
        """Newest first, optionally for one model (and version)."""
        out = []
        for raw in await self.store.alerts(self.store.max_alerts):
            alert = events_pb2.DriftAlert.FromString(raw)
            if (model and alert.model != model) or (version and alert.version != version):
                continue
            out.append(alert)
            if len(out) >= limit:
                break
        return out
