"""Reference distributions per model version, fetched from the registry (``RegistryService.GetReference``)
and cached in the process.

"No reference yet" is a normal state, not an error: a version registered without one (older trainers,
hand-registered models), a registry that does not serve them yet, or a registry that is down. The
version is then monitored without the data-drift checks, and the fetch is retried every
``retry_s`` so that a reference stored later is picked up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from mlops.grpc_util import channel
from mlops.v1 import registry_pb2, registry_pb2_grpc
from services.drift.reference import BadReference, Reference, parse

log = logging.getLogger(__name__)

#: Returns the JSON bytes, or None when the registry says the version has none.
Fetch = Callable[[str, str], Awaitable[bytes | None]]


@dataclass(slots=True)
class Entry:
    status: str  # loaded | missing | unavailable | invalid
    reference: Reference | None
    checked_at: float
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"status": self.status, "checked_at": self.checked_at}
        if self.detail:
            out["detail"] = self.detail
        if self.reference is not None:
            out.update(self.reference.summary())
        return out


class RegistryReferences:
    """The registry's gRPC ``GetReference``; NOT_FOUND (and an older registry's UNIMPLEMENTED) mean none."""

    def __init__(self, address: str, timeout_s: float = 5.0) -> None:
        self._address = address
        self._timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None

    async def __call__(self, model: str, version: str) -> bytes | None:
        if self._channel is None:
            self._channel = channel(self._address)
        stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        try:
            got = await stub.GetReference(registry_pb2.ModelVersionRef(model=model, version=version),
                                          timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                return None
            raise
        return bytes(got.json) or None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


class ReferenceCache:
    def __init__(self, fetch: Fetch, retry_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._retry_s = retry_s
        self._clock = clock
        self._entries: dict[tuple[str, str], Entry] = {}

    def entry(self, model: str, version: str) -> Entry | None:
        return self._entries.get((model, version))

    async def get(self, model: str, version: str) -> Reference | None:
        """The version's reference, or None (fetching at most once per ``retry_s`` while there is none)."""
        key = (model, version)
        entry = self._entries.get(key)
        if entry is not None and (entry.status == "loaded" or self._clock() - entry.checked_at < self._retry_s):
            return entry.reference
        now = self._clock()
        try:
            data = await self._fetch(model, version)
        except Exception as exc:  # the registry is down or slow: monitor without the reference for now
            log.warning("reference of %s/%s unavailable: %r", model, version, exc)
            self._entries[key] = Entry("unavailable", None, now, repr(exc)[:200])
            return None
        if data is None:
            self._entries[key] = Entry("missing", None, now, "the registry holds no reference for this version")
            return None
        try:
            reference = parse(data)
        except BadReference as exc:
            log.warning("reference of %s/%s is malformed: %s", model, version, exc)
            self._entries[key] = Entry("invalid", None, now, str(exc)[:200])
            return None
        self._entries[key] = Entry("loaded", reference, now)
        log.info("loaded the reference of %s/%s (%d features)", model, version, len(reference.features))
        return reference
