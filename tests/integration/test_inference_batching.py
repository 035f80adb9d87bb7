"""Dynamic batching against the real stack: requests from concurrent clients share forward passes (the
batch-size histogram on /metrics shows batches of more than one request), and each client gets exactly its
own rows back."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as tgrpc_aio
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import InferInput

from tests.integration.inference_support import expected, headers, ready, register
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

CLIENTS, REQUESTS = 48, 8
TAG = 5.0


def histogram(text: str, name: str, model: str) -> dict[str, float]:
    """``{"count", "sum", "le=1"}`` of one model's histogram ``name`` in Prometheus text."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name.endswith("_count"):
                out["count"] = sample.value
            elif sample.name.endswith("_sum"):
                out["sum"] = sample.value
            elif sample.name.endswith("_bucket") and float(sample.labels["le"]) == 1.0:
                out["le=1"] = sample.value
    return out


async def test_concurrent_clients_share_forward_passes_and_get_their_own_rows(stack: Stack) -> None:
    model = f"batch-{uuid.uuid4().hex[:8]}"
    version = (await asyncio.to_thread(register, stack.grpc("registry"), model, TAG, "production")).version
    client = tgrpc_aio.InferenceServerClient(stack.grpc("inference"))
    mismatches: list[str] = []
    rows_sent = 0

    async def one_client(i: int) -> None:
        nonlocal rows_sent
        for j in range(REQUESTS):
            n = 1 + (i + j) % 4
            # Rows unique to this client and request: client id, request id, row index.
            x = np.array([[i, j, r, i * 100 + j] for r in range(n)], dtype=np.float32)
            inp = InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            result = await client.infer(model, [inp], model_version=version, headers=headers())
            got = result.as_numpy("output")
            rows_sent += n
            if got.shape != (n, 2) or not np.allclose(got, expected(x, TAG), rtol=1e-6):
                mismatches.append(f"client {i} request {j}: sent {x.tolist()}, got {got.tolist()}")

    try:
        await ready(client, model, version)
        await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))
    finally:
        await client.close()
    assert mismatches == []

    async with httpx.AsyncClient(timeout=30) as http:
        text = (await http.get(stack.url("inference", "/metrics"))).text
    requests = histogram(text, "mlops_inference_batch_requests", model)
    rows = histogram(text, "mlops_inference_batch_rows", model)
    # Every request and every row went through exactly one forward pass...
    assert requests["sum"] == CLIENTS * REQUESTS and rows["sum"] == rows_sent
    # ...and some forward passes served several clients' requests at once.
    assert requests["count"] < CLIENTS * REQUESTS and requests["le=1"] < requests["count"]
    assert histogram(text, "mlops_inference_queue_seconds", model)["count"] == CLIENTS * REQUESTS
    assert histogram(text, "mlops_inference_compute_seconds", model)["count"] == requests["count"]
