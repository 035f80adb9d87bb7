"""The platform's typed errors, mapped once to HTTP status and gRPC code at the adapters."""

from __future__ import annotations

from typing import Any

import grpc


class MlopsError(Exception):
    """Base error: a stable ``code``, a message for people, and the offending ``field`` when known."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL
    code = "internal"

    def __init__(self, message: str, field: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        #: structured facts a client can act on (a refused schema change's diff), beside the message
        self.details = details

    def to_body(self) -> dict[str, dict[str, Any]]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return {"error": body}


class InvalidArgument(MlopsError):
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    code = "invalid_argument"


class NotFound(MlopsError):
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND
    code = "not_found"


class Conflict(MlopsError):
    http_status = 409
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    code = "conflict"


class Unauthenticated(MlopsError):
    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    code = "unauthenticated"


class PermissionDenied(MlopsError):
    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    code = "permission_denied"


class Unavailable(MlopsError):
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    code = "unavailable"


class PoisonRecord(MlopsError):
    """A Kafka record that can never be processed (bad bytes, bad schema): it goes to the dead-letter topic."""

    code = "poison_record"


class RateLimited(MlopsError):
    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    code = "rate_limited"


class TooLarge(MlopsError):
    http_status = 413
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    code = "too_large"
