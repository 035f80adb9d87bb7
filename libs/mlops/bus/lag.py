"""Consumer lag as an SRE reads it: per partition, the log end offset minus the offset the consumer group
committed, sampled from the broker on a period.

The gauge used to be set from the last *fetched* record against the fetch's high watermark, once per
fetched batch: records fetched but not yet handled (or handled and not committed) counted as consumed,
and a lane busy with one long batch never updated it, so feedback's ``predictions`` consumer read 0 with
15,000 records unconsumed. Committed offsets are what a restart resumes from, and the broker's answer
does not depend on this process fetching.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from mlops import telemetry

log = logging.getLogger(__name__)

#: seconds between samples of the broker's offsets (two small requests per assigned partition set)
LAG_INTERVAL_S = 5.0


class LagGauge:
    """Sets ``mlops_consumer_lag`` for the partitions ``consumer`` holds, from the broker's offsets."""

    def __init__(self, consumer: AIOKafkaConsumer, group: str, topic: str,
                 interval_s: float = LAG_INTERVAL_S) -> None:
        self._consumer = consumer
        self._group = group
        self._topic = topic
        self._interval_s = interval_s
        self._reported: set[int] = set()

    async def sample(self) -> dict[int, int]:
        """Per assigned partition, records after the group's committed offset (from the start of the log
        when the group never committed one); the gauge is set to them, and dropped for partitions this
        process no longer holds (their new owner reports them)."""
        assigned = set(self._consumer.assignment())
        lags: dict[int, int] = {}
        if assigned:
            ends = await self._consumer.end_offsets(list(assigned))
            for tp in assigned:
                # The embedded broker (tansu 0.6) answers end_offsets about one producer batch short of the
                # log end while its fetch responses carry the right high watermark: the larger of the two
                # is the log end there, and either is on Apache Kafka.
                end = max(ends[tp], self._consumer.highwater(tp) or 0)
                committed = await self._consumer.committed(tp)
                if committed is None:
                    committed = (await self._consumer.beginning_offsets([tp]))[tp]
                lags[tp.partition] = max(0, end - committed)
        service = telemetry.service_name()
        for partition, lag in lags.items():
            telemetry.CONSUMER_LAG.labels(service, self._group, self._topic, partition).set(lag)
        for partition in self._reported - lags.keys():
            telemetry.CONSUMER_LAG.remove(service, self._group, self._topic, partition)
        self._reported = set(lags)
        return lags

    async def run(self) -> None:
        """Sample every ``interval_s`` until cancelled; a broker error skips one sample."""
        while True:
            try:
                await self.sample()
            except KafkaError as exc:
                log.info("consumer lag of %s on %s not sampled: %s", self._group, self._topic, exc)
            await asyncio.sleep(self._interval_s)

