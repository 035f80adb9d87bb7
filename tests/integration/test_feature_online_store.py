"""The online store's apply script on the real redis-server: duplicates mixed into one call (redeliveries
and a repeat within the call) are skipped without disturbing the events around them, so the features
equal those of the same events applied once each."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from services.feature.definitions import Definitions
from services.feature.online import KEY_PREFIX, OnlineEvent, OnlineStore
from services.feature.settings import DEFAULT_DEFINITIONS
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def _events(run: str, entity_prefix: str, now_ms: int) -> list[OnlineEvent]:
    out = []
    for i in range(6):
        fields = {"amount": 10.0 * (i + 1), "merchant": f"m{i % 3}", "card_present": i % 2 == 0}
        out.append(OnlineEvent(f"{run}-{i}", f"{entity_prefix}{i % 2}", "payments-store-test",
                               now_ms - (60 - i) * 60_000, fields))
    return out


async def test_duplicates_within_one_call_are_skipped_and_the_rest_applied(stack: Stack) -> None:
    redis = Redis.from_url(stack.redis_url)
    store = OnlineStore(redis, Definitions.load(DEFAULT_DEFINITIONS), marker_ttl_s=600)
    run = uuid.uuid4().hex[:8]
    now_ms = int(time.time() * 1000)
    dup = _events(f"dup-{run}", f"dup-{run}-", now_ms)
    once = _events(f"once-{run}", f"once-{run}-", now_ms)
    try:
        first = await store.apply(dup[:3])
        assert (first.applied, first.duplicates) == (3, 0)
        # redeliveries of events 1 and 0, a repeat of event 3 within the call, among new events 3, 4, 5
        second = await store.apply([dup[1], dup[3], dup[0], dup[4], dup[3], dup[5]])
        assert (second.applied, second.duplicates) == (3, 3)

        reference = await store.apply(once)
        assert (reference.applied, reference.duplicates) == (6, 0)

        at = datetime.fromtimestamp(now_ms / 1000, UTC)
        got = await store.read([f"dup-{run}-0", f"dup-{run}-1"], [], at)
        want = await store.read([f"once-{run}-0", f"once-{run}-1"], [], at)
        for g, w in zip(got, want, strict=True):
            assert g["found"] and w["found"]
            assert g["values"] == w["values"]
            assert g["event_time"] == w["event_time"]
        assert got[0]["values"]["event_count"] == 3
        assert got[1]["values"]["payments_1h"] is not None
    finally:
        await redis.aclose()


async def test_an_old_event_at_the_end_of_its_hour_counts_in_its_hour_only(stack: Stack) -> None:
    """An event eight days old (past the 7-day TTL), in the last minute of its hour: reads ``as_of`` a
    moment after it see it in every window; a read in the next hour no longer counts it in the tumbling
    hour (``payments_1h``: the hour the read falls in) but still in the sliding hour and the whole
    history. Windows are evaluated at ``as_of``, not at Redis's clock, and the keys live the TTL from the
    write, not from the event's time."""
    redis = Redis.from_url(stack.redis_url)
    store = OnlineStore(redis, Definitions.load(DEFAULT_DEFINITIONS), marker_ttl_s=600)
    run = uuid.uuid4().hex[:8]
    hour = (datetime.now(UTC) - timedelta(days=8)).replace(minute=0, second=0, microsecond=0)
    event_at = hour + timedelta(minutes=59, seconds=30)
    entity = f"hour-end-{run}"
    try:
        applied = await store.apply([OnlineEvent(f"{run}-0", entity, "payments-store-test",
                                                 int(event_at.timestamp() * 1000), {"amount": 5.0})])
        assert (applied.applied, applied.late) == (1, 0)
        assert await redis.ttl(KEY_PREFIX + entity) > 6 * 86400

        (now,) = await store.read([entity], ["amount", "payments_1h"])
        assert now["found"] and now["values"] == {"amount": None, "payments_1h": None}  # stale

        (same_hour,) = await store.read([entity], [], event_at + timedelta(seconds=20))
        assert same_hour["values"]["payments_1h"] == 1 and same_hour["values"]["amount_sum_1h"] == 5

        (next_hour,) = await store.read([entity], [], event_at + timedelta(minutes=1))
        values = next_hour["values"]
        assert values["amount"] == 5.0 and values["amount_total"] == 5 and values["amount_sum_1h"] == 5
        assert values["payments_1h"] == 0
    finally:
        await redis.aclose()
