"""Re-declaring a stream's schema without pulling a field out from under a serving model.

Before a schema is stored, it is compared with the stored one (:mod:`services.ingest.schema_diff`). A change
that only adds fields (or changes nothing a model reads) is stored at once. One that drops or retypes fields
asks the registry which serving versions (production, canary, shadow) list them in their signatures; if any
does, the change is refused (409 Conflict / FAILED_PRECONDITION, the diff in the error's ``details``) unless
forced with a reason, and a forced one goes in the audit trail as ``schema.forced``. When the registry cannot
be asked, a dropping or retyping change is refused as unavailable (503): the platform does not guess that no
one reads a field. A dry run answers the same diff without storing anything.

The registry is asked over gRPC (``ListModelVersions``) with ingest's own token, which holds ``read`` only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from mlops.auth import audit
from mlops.auth.guard import current_principal
from mlops.bus.producer import Producer
from mlops.errors import Conflict, InvalidArgument, Unavailable
from mlops.grpc_util import channel
from mlops.v1 import registry_pb2, registry_pb2_grpc
from services.ingest import schema_diff
from services.ingest.schema import SchemaStore, StreamSchema, check_stream_name

log = logging.getLogger(__name__)

#: The audit action of a schema change forced past the models that read what it drops or retypes.
FORCED_ACTION = "schema.forced"


class ServingReaders(Protocol):
    async def serving(self) -> list[schema_diff.Reader]: ...


class RegistryReaders:
    """The serving versions and their signatures, from the registry."""

    def __init__(self, address: str, timeout_s: float = 10.0) -> None:
        self._channel = channel(address)
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self._timeout = timeout_s

    async def serving(self) -> list[schema_diff.Reader]:
        request = registry_pb2.ListModelVersionsRequest(stages=list(schema_diff.READING_STAGES))
        try:
            response = await self._stub.ListModelVersions(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                "this change drops or retypes fields, and the registry could not be asked which serving model "
                f"versions read them ({exc.code().name}: {exc.details()}); retry when it answers, or force the "
                "change with a reason", field="schema") from exc
        return [schema_diff.Reader(v.model, v.version, v.stage, tuple(v.signature.features))
                for v in response.versions]

    async def close(self) -> None:
        await self._channel.close()


@dataclass(slots=True)
class Outcome:
    """What a schema declaration did: the stored schema (None on a dry run) and the diff it made."""

    schema: StreamSchema | None
    plan: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        if self.schema is None:
            return {"dry_run": True, "changes": self.plan}
        return {**self.schema.model_dump(mode="json"), "changes": self.plan}


class SchemaChanges:
    def __init__(self, store: SchemaStore, readers: ServingReaders, producer: Producer | None = None) -> None:
        self.store = store
        self._readers = readers
        self._producer = producer

    async def plan(self, stream: str, schema: StreamSchema) -> tuple[StreamSchema | None, schema_diff.SchemaDiff,
                                                                       dict[str, list[str]]]:
        """The stored schema, the diff ``schema`` would make, and who reads what it drops or retypes."""
        check_stream_name(stream)
        before = self.store.find(stream)
        change = schema_diff.diff(stream, before, schema)
        read_by = schema_diff.readers_of(change, await self._readers.serving()) if change.removes_or_retypes else {}
        return before, change, read_by

    async def put(self, stream: str, schema: StreamSchema, *, force: bool = False, reason: str = "",
                  dry_run: bool = False) -> Outcome:
        before, change, read_by = await self.plan(stream, schema)
        plan = schema_diff.plan(change, read_by)
        if dry_run:
            return Outcome(None, plan)
        if read_by and not force:
            raise Conflict(
                f"stream {stream!r}: this schema {schema_diff.summary(change, read_by)}. Deploy model versions that "
                "do without them first, or force the change with force=true and a reason (audited)",
                field="fields", details=plan)
        if read_by and not reason.strip():
            raise InvalidArgument("force needs a reason: it is recorded in the audit trail", field="reason")
        # Stored only if no one else stored a version since the one this diff was made against.
        stored = self.store.put(stream, schema, expect_version=before.version if before is not None else 0)
        if read_by:
            await self._audit_forced(stream, change, read_by, reason)
        return Outcome(stored, plan)

    async def _audit_forced(self, stream: str, change: schema_diff.SchemaDiff, read_by: dict[str, list[str]],
                            reason: str) -> None:
        principal = current_principal.get()
        name = principal.name if principal is not None else "anonymous"
        what = schema_diff.summary(change, read_by)
        log.warning("schema of stream %s forced by %s: %s (reason: %s)", stream, name, what, reason)
        await audit.record(self._producer, name, FORCED_ACTION, f"stream:{stream}", f"{reason} [{what}]",
                           actor_id=principal.token_id if principal is not None else "")
