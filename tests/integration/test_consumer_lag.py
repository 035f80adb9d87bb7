"""The consumer-lag gauge on the real broker: with a known backlog (records produced, some handled and
committed, the rest fetched or not but not committed) it reads the records after the group's committed
offset, per partition; it used to read the last *fetched* record against the fetch's high watermark,
once per fetched batch, and so read 0 while a busy consumer had thousands of records left."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from mlops import telemetry
from mlops.bus import topics
from mlops.bus.batch_consumer import BatchConsumer
from mlops.bus.envelope import Envelope
from mlops.settings import PlatformSettings
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

PRODUCED = 1000
BATCH = 50
COMMITTED = 300  # handled and committed; the handler then holds the next batch


def _lag(group: str, topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value("mlops_consumer_lag", {"service": telemetry.service_name(), "group": group,
                                                            "topic": topic, "partition": str(partition)})


async def _until(condition, what: str, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def test_the_lag_gauge_counts_every_record_after_the_committed_offset(stack: Stack) -> None:
    settings = PlatformSettings(kafka_bootstrap=stack.kafka, redis_url=stack.redis_url,
                                topic_prefix=f"lag-{uuid.uuid4().hex[:8]}.")
    await topics.ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka, acks="all")
    await producer.start()
    try:
        acks = [await producer.send(topics.name(topics.PREDICTIONS, settings), value=b"%d" % i, partition=0)
                for i in range(PRODUCED)]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()

    handled = 0
    held = asyncio.Event()
    release = asyncio.Event()

    async def handle(batch: Sequence[Envelope], final: bool) -> bool:
        nonlocal handled
        if batch and handled >= COMMITTED:
            held.set()
            await release.wait()  # a slow handler: this batch and the rest stay uncommitted
        handled += len(batch)
        return True

    group = f"lag-{uuid.uuid4().hex[:8]}"
    consumer = BatchConsumer(settings, topics.PREDICTIONS, group, handle, max_records=BATCH, lag_interval_s=0.1)
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(held.wait(), 60)
        assert handled == COMMITTED
        await _until(lambda: _lag(group, topics.PREDICTIONS, 0) == PRODUCED - COMMITTED,
                     f"lag {PRODUCED - COMMITTED} (reads {_lag(group, topics.PREDICTIONS, 0)})")
        for partition in range(1, settings.topic_partitions):
            assert _lag(group, topics.PREDICTIONS, partition) == 0, "an empty partition is not behind"
        release.set()
        await _until(lambda: _lag(group, topics.PREDICTIONS, 0) == 0, "caught up once the handler went on")
        assert handled == PRODUCED
    finally:
        release.set()
        await consumer.stop()
        await task
