"""Adds the archive to a service: three consumers (their offsets committed only after the Parquet flush)
and the query API."""

from __future__ import annotations

import asyncio

from mlops.archive import consumers, http
from mlops.archive.store import ArchiveStore
from mlops.bus import topics
from mlops.service import Service


def mount(service: Service) -> ArchiveStore:
    store = ArchiveStore(service.settings.home / "archive")

    async def flush() -> None:
        await asyncio.to_thread(store.flush)

    service.add_http(http.router(store))
    service.add_consumer(topics.PREDICTIONS, consumers.on_prediction(store), group="archive.predictions",
                         before_commit=flush)
    service.add_consumer(topics.REWARDS, consumers.on_reward(store), group="archive.rewards", before_commit=flush)
    service.add_consumer(topics.LABELS, consumers.on_label(store), group="archive.labels", before_commit=flush)
    return store
