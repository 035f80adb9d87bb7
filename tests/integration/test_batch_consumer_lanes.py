"""The batch consumer on the real broker: each partition's records are handled exactly once and in order,
different partitions' batches are handled at the same time, and the offsets committed at the end are
those of every record handled."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from mlops.bus import topics
from mlops.bus.batch_consumer import BatchConsumer
from mlops.bus.envelope import Envelope
from mlops.settings import PlatformSettings
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

PER_PARTITION = 200


async def test_partitions_are_handled_in_order_concurrently_and_committed(stack: Stack) -> None:
    settings = PlatformSettings(kafka_bootstrap=stack.kafka, redis_url=stack.redis_url,
                                topic_prefix=f"lanes-{uuid.uuid4().hex[:8]}.")
    await topics.ensure_topics(settings)
    topic = topics.name(topics.EVENTS_RAW, settings)
    partitions = settings.topic_partitions
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka, acks="all")
    await producer.start()
    try:
        acks = [await producer.send(topic, value=f"{p}:{i}".encode(), partition=p)
                for i in range(PER_PARTITION) for p in range(partitions)]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()

    handled: dict[int, list[int]] = defaultdict(list)
    prepared: list[int] = []
    in_flight = 0
    most_in_flight = 0
    done = asyncio.Event()

    def prepare(envelopes: Sequence[Envelope]) -> Sequence[Envelope]:
        prepared.append(len(envelopes))
        return envelopes

    async def handle(batch: Sequence[Envelope], final: bool) -> bool:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        try:
            await asyncio.sleep(0.03)  # I/O: the time another partition's batch can use
            for env in batch:
                assert env.value.decode() == f"{env.partition}:{env.offset}"
                handled[env.partition].append(env.offset)
            if sum(map(len, handled.values())) >= partitions * PER_PARTITION:
                done.set()
            return True
        finally:
            in_flight -= 1

    group = f"lanes-{uuid.uuid4().hex[:8]}"
    consumer = BatchConsumer(settings, topics.EVENTS_RAW, group, handle, prepare=prepare, max_records=40)
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await consumer.stop()
        await task

    for p in range(partitions):
        assert handled[p] == list(range(PER_PARTITION)), f"partition {p}: every record once, in order"
    assert most_in_flight >= 2, "batches of different partitions were handled at the same time"
    assert sum(prepared) == partitions * PER_PARTITION

    check = AIOKafkaConsumer(bootstrap_servers=stack.kafka, group_id=settings.topic_prefix + group,
                             enable_auto_commit=False)
    await check.start()
    try:
        for p in range(partitions):
            assert await check.committed(TopicPartition(topic, p)) == PER_PARTITION
    finally:
        await check.stop()
