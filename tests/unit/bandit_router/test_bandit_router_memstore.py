"""The in-memory store the unit tests use honours the store contract (the real one does too, on Redis:
tests/integration/test_router_store.py)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.unit.bandit_router.bandit_router_fakes import MemoryStore
from tests.unit.bandit_router.bandit_router_store_contract import CHECKS


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_memory_store_honours_the_contract(check: Callable[[Any, str], Awaitable[None]]) -> None:
    await check(MemoryStore(), f"ep-{uuid.uuid4().hex[:8]}")
