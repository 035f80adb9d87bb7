"""Fuzzing every service's REST API from its own OpenAPI document (schemathesis strategies driven by
hypothesis): whatever the input, no 5xx and no crash. Bad input is the caller's fault and gets a 4xx."""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from mlops.settings import SERVICES
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

EXAMPLES = 12
# Unavailable (503) is the honest answer while a dependency is still loading; anything else >= 500 is a bug.
ALLOWED_5XX = {503}


def _fuzz(url: str) -> list[str]:
    schema = schemathesis.openapi.from_url(url)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        @given(case=operation.as_strategy())
        def check(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(timeout=30)
            if response.status_code >= 500 and response.status_code not in ALLOWED_5XX:
                failures.append(f"{case.method} {case.formatted_path} body={str(case.body)[:200]} -> "
                                f"{response.status_code}: {response.text[:200]}")

        check()
    return failures


@pytest.mark.parametrize("service", SERVICES)
async def test_no_input_gets_a_5xx(stack: Stack, service: str) -> None:
    failures = await asyncio.to_thread(_fuzz, stack.url(service, "/openapi.json"))
    assert not failures, "\n".join(failures[:10])
