"""Which permission each API method needs, and which roles hold which permissions: one table for REST
and gRPC across all services. Reads need ``read``; anything not listed that changes state needs ``admin``."""

from __future__ import annotations

import functools
import re
from typing import Any

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "predictor": frozenset({"read", "predict", "feedback"}),
    "producer": frozenset({"read", "events"}),
    "scientist": frozenset({"read", "predict", "feedback", "train", "register", "stage", "schema"}),
    "admin": frozenset({"read", "predict", "feedback", "events", "train", "register", "stage", "schema",
                        "promote", "endpoints", "tokens", "admin"}),
}

#: Permissions whose successful use is a state change recorded in the audit trail.
AUDITED = frozenset({"train", "register", "stage", "schema", "promote", "endpoints", "tokens", "admin"})

#: Stages only an admin may set.
ADMIN_STAGES = frozenset({"production", "archived"})

_REST: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), perm)
    for m, p, perm in [
        ("POST", r"^/v1/features/online$", "read"),
        ("POST", r"^/v1/datasets$", "train"),
        ("POST", r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$", "predict"),
        ("POST", r"^/v1/endpoints/[^/]+/predict$", "predict"),
        ("PUT", r"^/v1/endpoints/[^/]+$", "endpoints"),
        ("POST", r"^/v1/feedback$", "feedback"),
        ("POST", r"^/v1/streams/[^/]+/events$", "events"),
        ("PUT", r"^/v1/streams/[^/]+/schema$", "schema"),
        ("POST", r"^/v1/models/[^/]+/versions/[^/]+/stage$", "stage"),
        ("POST", r"^/v1/models/[^/]+/rollback$", "promote"),
        ("POST", r"^/v1/runs$", "register"),
        ("PATCH", r"^/v1/runs/[^/]+$", "register"),
        ("POST", r"^/v1/runs/[^/]+/metrics$", "register"),
        ("PUT", r"^/v1/runs/[^/]+/files/[^/]+$", "register"),
        ("POST", r"^/v1/training-jobs$", "train"),
    ]
]

_GRPC: dict[str, str] = {
    "/mlops.v1.IngestService/SendEvents": "events",
    "/mlops.v1.IngestService/StreamEvents": "events",
    "/mlops.v1.IngestService/PutSchema": "schema",
    "/mlops.v1.FeatureService/GetOnlineFeatures": "read",
    "/mlops.v1.FeatureService/BuildDataset": "train",
    "/mlops.v1.TrainerService/SubmitJob": "train",
    "/mlops.v1.RegistryService/RegisterModelVersion": "register",
    "/mlops.v1.RegistryService/SetStage": "stage",
    "/mlops.v1.RegistryService/Rollback": "promote",
    "/inference.GRPCInferenceService/ModelInfer": "predict",
    "/mlops.v1.BanditRouterService/Predict": "predict",
    "/mlops.v1.BanditRouterService/PutEndpoint": "endpoints",
    "/mlops.v1.FeedbackService/SendFeedback": "feedback",
}

OPEN_PATHS = re.compile(r"^/(healthz|readyz|metrics|docs|redoc|openapi\.json|v2/health/(live|ready))(/.*)?$")
OPEN_GRPC = re.compile(r"^/grpc\.health\.v1\.Health/|^/inference\.GRPCInferenceService/Server(Live|Ready)$")


@functools.lru_cache(maxsize=4096)  # every request asks; most ask about the same few paths
def rest_permission(method: str, path: str) -> str:
    for m, pattern, perm in _REST:
        if m == method and pattern.match(path):
            return perm
    return "read" if method in ("GET", "HEAD", "OPTIONS") else "admin"


def grpc_permission(full_method: str, request: Any = None) -> str:
    perm = _GRPC.get(full_method)
    if perm is None:
        name = full_method.rsplit("/", 1)[-1]
        perm = "read" if name.startswith(("Get", "List", "Resolve", "Read", "Model", "Server")) else "admin"
    if perm == "stage" and getattr(request, "stage", "") in ADMIN_STAGES:
        return "promote"
    return perm


def allowed(role: str, permission: str) -> bool:
    return permission in ROLE_PERMISSIONS.get(role, frozenset())
